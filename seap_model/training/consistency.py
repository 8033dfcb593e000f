"""Guided latent consistency distillation (LCD, Luo et al. 2023, as diffusers' LCM training scripts do it):
the objective that teaches a student U-Net to jump from any point of the teacher's trajectory to its end.

Each item is noised to a time ``t`` on the teacher's DDIM grid (``solver_steps`` points). The teacher, guided
as the pipeline guides it (text and style scales drawn per item), takes one DDIM step to ``t - T/solver_steps``;
a moving average of the student (the target) maps that point to its clean estimate, and the student, given the
scales as an input, must map the point at ``t`` to the same estimate. The boundary scalings are those of
diffusers' ``LCMScheduler`` (``timestep_scaling`` 10), which samples the result. Written here because diffusers
ships this objective only inside its example training scripts, not as a library function.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch.optim.swa_utils import get_ema_multi_avg_fn

from seap_model.models.unet import guidance_embedding
from seap_model.training.batches import BatchSampler

SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0  # LCMScheduler's defaults: the student is sampled with it


def boundary_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) at integer timesteps ``t``: c_skip(0) = 1 and c_out(0) = 0, so the estimate at the end of
    the trajectory is the point itself."""
    scaled = t.float() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip[:, None, None, None], c_out[:, None, None, None]


class Parameterisation:
    """Clean-sample and noise estimates from a U-Net output (epsilon or v prediction) at timesteps ``t``."""

    def __init__(self, scheduler: DDPMScheduler):
        self.alphas_cumprod = scheduler.alphas_cumprod
        self.v = scheduler.config.prediction_type == "v_prediction"

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas_cumprod.to(like.device)[t].float()[:, None, None, None]
        return a.sqrt(), (1 - a).sqrt()

    def x0(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._ab(t, x)
        return a * x - s * out if self.v else (x - s * out) / a

    def eps(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._ab(t, x)
        return a * out + s * x if self.v else out

    def at(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The point at ``t`` with clean part ``x0`` and noise ``eps`` (one DDIM step's landing point)."""
        a, s = self._ab(t, x0)
        return a * x0 + s * eps


class DistillSampler(BatchSampler):
    """The fine-tune's batches (no condition dropout) plus, from the same seeded generator (so a resumed run
    draws what the straight run drew): each item's point on the DDIM grid, its text and style scales, and
    whether its reference is dropped."""

    def __init__(self, *args, solver_steps: int, text: tuple[float, float], style: tuple[float, float], drop: float):
        super().__init__(*args)
        self.solver_steps, self.text, self.style, self.drop = solver_steps, text, style, drop

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        batch = super().sample(batch_size)
        g = self.generator
        u = torch.rand(batch_size, 3, generator=g)
        index = torch.randint(self.solver_steps, (batch_size,), generator=g)
        keep = batch["keep_reference"] & (u[:, 2] >= self.drop)
        text = self.text[0] + u[:, 0] * (self.text[1] - self.text[0])
        style = torch.where(keep, self.style[0] + u[:, 1] * (self.style[1] - self.style[0]), torch.zeros(()))
        return {**batch, "keep_reference": keep, "solver_index": index, "guidance": torch.stack([text, style], 1)}


class ConsistencyDistillation:
    """The LCD objective for ``train_denoiser``: ``loss(student, batch)``, ``after_step()`` (the target's moving
    average) and the target as a module for the checkpoints. ``teacher`` and ``target`` are ``StyledDenoiser``s
    (the target a copy of the student); ``null_tokens``/``null_mask``: the empty caption's (1, L, D)/(1, L)."""

    def __init__(
        self,
        teacher: torch.nn.Module,
        student: torch.nn.Module,
        target: torch.nn.Module,
        scheduler: DDPMScheduler,
        null_tokens: torch.Tensor,
        null_mask: torch.Tensor,
        solver_steps: int,
        guidance_dim: int,
        target_decay: float,
        huber_c: float,
    ):
        self.teacher, self.student, self.target = teacher.eval().requires_grad_(False), student, target
        self.target.requires_grad_(False)
        self.scheduler, self.param = scheduler, Parameterisation(scheduler)
        self.null_tokens, self.null_mask = null_tokens, null_mask
        self.gap = scheduler.config.num_train_timesteps // solver_steps
        self.guidance_dim, self.huber_c = guidance_dim, huber_c
        self._ema = get_ema_multi_avg_fn(target_decay)

    def timesteps(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid point ``index`` (0 ... solver_steps-1) and the one a DDIM step below it (0 at the bottom)."""
        t = (index + 1) * self.gap - 1
        return t, (t - self.gap).clamp(min=0)

    @torch.no_grad()
    def teacher_noise(self, x: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """The teacher's guided output, as the pipeline guides: e(null) + g_t (e(text) - e(null)) + g_s (e(text,
        ref) - e(text)), the three branches in one call."""
        b = x.shape[0]
        both = {k: torch.cat([v] * 3) for k, v in batch.items() if isinstance(v, torch.Tensor) and len(v) == b}
        both["tokens"] = torch.cat([self.null_tokens.expand(b, -1, -1).to(x.device), batch["tokens"], batch["tokens"]])
        both["mask"] = torch.cat([self.null_mask.expand(b, -1).to(x.device), batch["mask"], batch["mask"]])
        off = torch.zeros(b, dtype=torch.bool, device=x.device)
        both["keep_reference"] = torch.cat([off, off, batch["keep_reference"]])
        both.pop("timestep_cond", None)
        null, text, ref = self.teacher(torch.cat([x] * 3), torch.cat([t] * 3), both).float().chunk(3)
        g_t, g_s = (batch["guidance"][:, i, None, None, None].to(x.device) for i in (0, 1))
        return null + g_t * (text - null) + g_s * (ref - text)

    def loss(self, student: torch.nn.Module, batch: dict) -> torch.Tensor:
        x0, noise = batch["latents"], batch["noise"]
        t, t_prev = self.timesteps(batch["solver_index"])
        x_t = self.scheduler.add_noise(x0, noise, t)
        batch = {**batch, "timestep_cond": guidance_embedding(batch["guidance"], self.guidance_dim).to(x0.device)}
        c_skip, c_out = boundary_scalings(t)
        estimate = c_skip * x_t + c_out * self.param.x0(student(x_t, t, batch).float(), x_t, t)
        with torch.no_grad():
            guided = self.teacher_noise(x_t, t, batch)
            x_prev = self.param.at(self.param.x0(guided, x_t, t), self.param.eps(guided, x_t, t), t_prev)
            c_skip, c_out = boundary_scalings(t_prev)
            aim = c_skip * x_prev + c_out * self.param.x0(self.target(x_prev, t_prev, batch).float(), x_prev, t_prev)
        return (((estimate - aim) ** 2 + self.huber_c**2).sqrt() - self.huber_c).mean()

    def after_step(self) -> None:
        self._ema(list(self.target.parameters()), list(self.student.parameters()), None)
