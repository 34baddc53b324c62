"""Typed configs of the two agent entry points: training and evaluation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agents.fieldtypes import check_field_types, check_rules, parse_json_object
from agents.results import ROLLOUTS
from envs.filters import ObservationFilter

#: The MLP nonlinearities ``dt_attn.transformer.ACTIVATIONS`` builds, named here so that reading a
#: config does not import torch (a test keeps the two lists equal).
ACTIVATION_NAMES = ("relu", "gelu")
#: Weight initialization schemes (``agents.model.INIT_SCHEMES``, named here so that reading a config does
#: not import torch; a test keeps the two lists equal).
INIT_SCHEMES = ("normal", "torch-default")
#: Tokens per timestep of a Decision Transformer's sequence: return-to-go, state, action (``agents.model``
#: lays them out; named here so that reading a config does not import torch). K steps are 3K tokens.
TOKENS_PER_STEP = 3
#: Training precisions: float32 throughout, or bfloat16 matrix multiplies under torch.autocast.
PRECISIONS = ("fp32", "bf16")

# TrainConfig fields that may change when a run is resumed; every other field must match. (A preset only
# names where the values came from: the values themselves are compared.)
RESUMABLE_CHANGES = {"steps", "resume", "device", "threads", "log_every", "checkpoint_every",
                     "eval_episodes", "eval_targets", "eval_envs", "eval_every", "rollout", "run_dir",
                     "preset"}

#: Named starting points of a training config (``--preset NAME``): their values lie above the defaults and
#: below a --config file and the flags.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # The small configuration: minutes on a laptop CPU, for a first run.
    "quick": {"attention": "cosformer", "embed_dim": 64, "n_layers": 2, "batch_size": 32, "steps": 1500,
              "warmup_steps": 150, "lr": 6e-4, "eval_episodes": 10, "threads": 1},
    # The Decision Transformer paper's MuJoCo settings (Chen et al. 2021, its gym code): the defaults.
    "paper": {"attention": "softmax", "context": 20, "embed_dim": 128, "n_layers": 3, "n_heads": 1,
              "dropout": 0.1, "activation": "relu", "batch_size": 64, "lr": 1e-4, "weight_decay": 1e-4,
              "warmup_steps": 10_000, "grad_clip": 0.25, "steps": 100_000, "rtg_scale": 1000.0},
}


@dataclass
class TrainConfig:
    """Every value of one training run (printed at the start, saved as config.json)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = TRAIN_PRESETS

    preset: str | None = field(default=None, metadata={
        "help": "named starting point: quick (cosformer, 64 wide, 2 layers, batch 32, 1500 steps: "
                "minutes on a CPU) or paper (the DT paper's settings, which are the defaults); --config "
                "and flags override it"})
    dataset: str = field(default="default", metadata={
        "help": "dataset spec: D4RL/Minari/stand-in id, .hdf5/.pkl path, or 'default' (embedded sample)"})
    env: str | None = field(default=None, metadata={
        "help": "environment name (hopper, halfcheetah, walker2d); inferred from the dataset when unset"})
    observe: str = field(default="full", metadata={
        "help": "task variant, applied to the dataset and the evaluation environments alike: full, positions "
                "(no velocities), noisy:SCALE (Gaussian noise), flicker:P (observations blanked with "
                "probability P, plus a seen flag), flip:P (each actuator's sign flipped with probability P "
                "per episode), or a +-joined combination such as positions+flicker:0.9 (docs/data.md)"})
    split_long_episodes: bool = field(default=False, metadata={
        "help": "cut episodes longer than the environment's step limit into pieces of that length (for data "
                "without terminal or timeout flags)"})
    attention: str = field(default="softmax", metadata={
        "help": "attention mechanism name (see dt_attn.available_attentions())"})
    attention_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "mechanism options as JSON, e.g. '{\"chunk_size\": 64}'"})
    mlp: str = field(default="mlp", metadata={
        "help": "channel mixer of every block: mlp, or moe:EXPERTS:TOP_K (a mixture of EXPERTS MLPs, each "
                "token routed to its TOP_K most probable experts)"})
    moe_aux_weight: float = field(default=0.01, metadata={
        "help": "weight of the mixture of experts' load-balancing loss in the training loss"})
    context: int = field(default=20, metadata={"help": "context length K in timesteps (3K tokens)"})
    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    dropout: float = field(default=0.1, metadata={
        "help": "dropout of each block's two residual branches, in training (GPT-2's resid_pdrop)"})
    attention_dropout: float = field(default=0.0, metadata={
        "help": "dropout of the attention probabilities, in training (GPT-2's attn_pdrop); softmax only, "
                "the other attentions refuse a value above 0"})
    embed_dropout: float = field(default=0.0, metadata={
        "help": "dropout of the token embeddings before the first block, in training (GPT-2's embd_pdrop)"})
    activation: str = field(default="relu", metadata={
        "help": "MLP nonlinearity: relu (the DT paper's code) or gelu"})
    init: str = field(default="normal", metadata={
        "help": "weight initialization: normal (N(0, init_std) weights, zero biases, GPT-2's scaled residual "
                "projections; as HuggingFace, CORL and d3rlpy) or torch-default (PyTorch's layer defaults)"})
    init_std: float = field(default=0.02, metadata={
        "help": "standard deviation of the normal initialization"})
    batch_size: int = 64
    precision: str = field(default="fp32", metadata={
        "help": "training arithmetic: fp32, or bf16 (matrix multiplies in bfloat16 under torch.autocast; "
                "weights, optimizer, loss and the attention stay float32; about 1.3-1.4x faster on CPUs with "
                "AVX512-BF16 or AMX). Evaluation always runs in float32"})
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000
    grad_clip: float = 0.25
    steps: int = field(default=100_000, metadata={"help": "gradient steps"})
    rtg_scale: float = field(default=1000.0, metadata={"help": "returns-to-go are divided by this"})
    seed: int = 0
    run_dir: str | None = field(default=None, metadata={
        "help": "output directory (default runs/<dataset>-<attention>-K<context>-s<seed>, plus -<hash> of "
                "the settings that differ from the defaults)"})
    checkpoint_every: int = field(default=1000, metadata={
        "help": "write a checkpoint every N steps (and at the end)"})
    log_every: int = 100
    eval_episodes: int = field(default=10, metadata={
        "help": "episodes per target at the end of training (0 = no evaluation)"})
    eval_targets: list[float] | None = field(default=None, metadata={
        "help": "target returns (default: the env's two D4RL-style targets)"})
    eval_envs: int = field(default=10, metadata={"help": "parallel evaluation environments"})
    eval_every: int = field(default=0, metadata={
        "help": "also evaluate every N steps during training, from a checkpoint written then "
                "(RUN_DIR/evals/, TensorBoard); 0 = only at the end"})
    rollout: str = field(default="exact", metadata={
        "help": "rollout of every evaluation during and after training: exact (the function that was "
                "trained: the last K steps) or streaming (approximate: a sliding window per layer, written "
                "to eval-streaming.json)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/checkpoint.pt"})

    def __post_init__(self) -> None:
        self.attention_options = parse_json_object("attention_options", self.attention_options)
        check_field_types(self)
        ObservationFilter.parse(self.observe)  # a bad spec: its one-line error before anything is read
        rules = {  # field -> (valid?, the rule an invalid value breaks)
            "context": (self.context >= 1, ">= 1"),
            "steps": (self.steps >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "embed_dim": (self.embed_dim >= 1, ">= 1"),
            "n_layers": (self.n_layers >= 1, ">= 1"),
            "n_heads": (self.n_heads >= 1, ">= 1"),
            "lr": (0 < self.lr < math.inf, "positive and finite"),
            "weight_decay": (0 <= self.weight_decay < math.inf, ">= 0 and finite"),
            "grad_clip": (self.grad_clip > 0, "> 0, the largest gradient norm (inf turns clipping off)"),
            "rtg_scale": (0 < self.rtg_scale < math.inf, "positive and finite"),
            "checkpoint_every": (self.checkpoint_every >= 1, ">= 1"),
            "log_every": (self.log_every >= 1, ">= 1"),
            "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
            "eval_episodes": (self.eval_episodes >= 0, ">= 0"),
            "eval_targets": (self.eval_targets is None or all(map(math.isfinite, self.eval_targets)),
                             "finite numbers"),
            "eval_envs": (self.eval_envs >= 1, ">= 1"),
            "eval_every": (self.eval_every >= 0 and (self.eval_every == 0 or self.eval_episodes >= 1),
                           ">= 0, and 0 when eval_episodes is 0 (nothing would be evaluated)"),
            "threads": (self.threads >= 0, ">= 0 (0 = torch's default)"),
            **{name: (0.0 <= getattr(self, name) < 1.0, "in [0, 1)")
               for name in ("dropout", "attention_dropout", "embed_dropout")},
            "mlp": (_mlp_ok(self.mlp), "mlp or moe:EXPERTS:TOP_K with 1 <= TOP_K <= EXPERTS, e.g. moe:4:1"),
            "moe_aux_weight": (0 <= self.moe_aux_weight < math.inf, ">= 0 and finite"),
            "activation": (self.activation in ACTIVATION_NAMES, "one of " + ", ".join(ACTIVATION_NAMES)),
            "precision": (self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
            "init": (self.init in INIT_SCHEMES, "one of " + ", ".join(INIT_SCHEMES)),
            "init_std": (0 < self.init_std < math.inf, "positive and finite"),
            "rollout": (self.rollout in ROLLOUTS, "one of " + ", ".join(ROLLOUTS)),
            "preset": (self.preset is None or self.preset in TRAIN_PRESETS,
                       "one of " + ", ".join(TRAIN_PRESETS) + ", or unset"),
        }
        check_rules(self, "training config", rules)


def _mlp_ok(spec: str) -> bool:
    """Whether ``spec`` names a channel mixer (``dt_attn.channel.parse_mlp``'s forms, checked here without
    importing torch)."""
    if spec == "mlp":
        return True
    parts = spec.split(":")
    return (len(parts) == 3 and parts[0] == "moe" and parts[1].isdigit() and parts[2].isdigit()
            and 1 <= int(parts[2]) <= int(parts[1]))


@dataclass
class EvalConfig:
    """Every value of one evaluation (saved inside the result JSON)."""

    checkpoint: str = field(default="", metadata={"help": "run directory or checkpoint .pt file"})
    episodes: int = field(default=10, metadata={"help": "episodes per target"})
    targets: list[float] | None = field(default=None, metadata={
        "help": "target returns (default: those of the training run)"})
    envs: int = field(default=10, metadata={"help": "parallel environments"})
    seed: int = field(default=1000, metadata={
        "help": "seed of the first evaluation environment (env i gets seed+i)"})
    rollout: str = field(default="exact", metadata={
        "help": "exact: the function that was trained (the last K steps, re-run every step when K is shorter "
                "than the episode); streaming: approximate, a sliding window of 3K-1 tokens per layer (upper "
                "layers see past K steps)"})
    observe: str | None = field(default=None, metadata={
        "help": "must match the training run's filter (checked); default: the run's"})
    env_id: str | None = field(default=None, metadata={
        "help": "gymnasium id override (default: the dataset's)"})
    max_steps: int | None = field(default=None, metadata={
        "help": "cap on steps per episode (default: the env's limit)"})
    device: str = "cpu"
    threads: int = 0
    output: str | None = field(default=None, metadata={
        "help": "result JSON path (default: eval.json beside the checkpoint, eval-streaming.json for the "
                "streaming rollout)"})
    video: str | None = field(default=None, metadata={
        "metavar": "PATH", "help": "also film the first episode at the first target (.mp4 or .gif, 480x480; "
                                   "`dt-attn video` has more options)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        ObservationFilter.parse(self.observe)  # a bad spec: its one-line error before anything is read
        check_rules(self, "evaluation config", {
            "episodes": (self.episodes >= 1, ">= 1"),
            "envs": (self.envs >= 1, ">= 1"),
            "threads": (self.threads >= 0, ">= 0 (0 = torch's default)"),
            "max_steps": (self.max_steps is None or self.max_steps >= 1, ">= 1"),
            "targets": (self.targets is None or all(map(math.isfinite, self.targets)), "finite numbers"),
            "rollout": (self.rollout in ROLLOUTS, "one of " + ", ".join(ROLLOUTS)),
        })


def run_evaluation(cfg: TrainConfig, checkpoint: str | Path, output: str | Path) -> EvalConfig:
    """The evaluation a training run asks for (its episodes, targets, envs, rollout, device, threads) of
    ``checkpoint``, written to ``output``."""
    return EvalConfig(checkpoint=str(checkpoint), episodes=cfg.eval_episodes, targets=cfg.eval_targets,
                      envs=min(cfg.eval_envs, cfg.eval_episodes), rollout=cfg.rollout, device=cfg.device,
                      threads=cfg.threads, output=str(output))

def run_name(dataset: str, observe: str, attention: str, context: int, seed: int) -> str:
    """Default run directory name: <dataset>[-<observe>]-<attention>-K<context>-s<seed>, where a dataset
    file (.hdf5, .pkl) is named by its file's stem and a dataset id's slashes (Minari's) become "_", and the
    observe spec is in its canonical spelling (lower case, parts in a fixed order) with ':' dropped and '+'
    as '-'."""
    path = Path(dataset)
    name = path.stem if path.suffix in (".hdf5", ".pkl") else dataset.replace("/", "_")
    observe = str(ObservationFilter.parse(observe))
    obs = "" if observe == "full" else f"-{observe.replace(':', '').replace('+', '-')}"
    return f"{name}{obs}-{attention}-K{context}-s{seed}"


def config_differences(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """'field (saved x, now y)' for every field of ``cfg`` that differs from a saved run's training config
    (of the current format: see ``agents.upgrade``), ignoring the fields a resume may change."""
    now = asdict(cfg)
    return [f"{k} (saved {saved.get(k)!r}, now {now[k]!r})" for k in now
            if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
