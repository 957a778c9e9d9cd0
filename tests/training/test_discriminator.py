"""Conv3D discriminator on frozen-teacher features (docs/method.md §5 GAN term)."""

import pytest
import torch
from helpers_wan import make_tiny_teacher, tiny_inputs

from tmd_core.errors import ConfigError, InputError
from tmd_core.model import wan_timestep
from tmd_core.training.config import Stage2Config
from tmd_core.training.discriminator import Discriminator, default_disc_layers, teacher_features
from tmd_core.training.stage2_dmd import discriminator_loss, gan_generator_loss


def test_default_layers():
    assert default_disc_layers(30) == (15, 22, 29)
    assert default_disc_layers(4) == (2, 3)
    teacher = make_tiny_teacher(0).requires_grad_(False)
    assert Discriminator.from_teacher(teacher).layers == (2, 3)
    with pytest.raises(ConfigError, match="block indices"):
        Discriminator.from_teacher(teacher, layers=(1, 4))


def test_features_are_the_teachers_hidden_states_on_the_token_grid():
    """Equal to the block outputs of a full teacher forward (hooks), unpatchified to [B, D, F', H', W'];
    blocks after the last requested one are not run."""
    teacher = make_tiny_teacher(1).requires_grad_(False)
    x, ctx = tiny_inputs(teacher, batch=2, frames=2, h=6, w=4, seed=1)
    seen, calls = {}, []

    def hook(i):
        def record(module, args, out):
            seen[i] = out
            calls.append(i)

        return record

    hooks = [b.register_forward_hook(hook(i)) for i, b in enumerate(teacher.blocks)]
    with torch.no_grad():
        teacher(x, timestep=wan_timestep(0.6, 2, "cpu"), encoder_hidden_states=ctx, return_dict=False)
        full = dict(seen)  # the teacher's own forward
        calls.clear()
        feats = teacher_features(teacher, x, 0.6, ctx, layers=(2, 0))
    for h in hooks:
        h.remove()
    assert calls == [0, 1, 2]  # block 3 skipped
    D = teacher.patch_embedding.out_channels
    for f, i in zip(feats, (2, 0)):
        assert f.shape == (2, D, 2, 3, 2)
        tokens = full[i]  # (B, T, D), T in (F', H', W') order
        assert torch.allclose(f[:, :, 1, 2, 0], tokens[:, 1 * 6 + 2 * 2 + 0], atol=1e-6)
        assert torch.allclose(f.flatten(2).transpose(1, 2), tokens, atol=1e-6)


def test_gradients_reach_the_input_not_the_teacher():
    teacher = make_tiny_teacher(2).requires_grad_(False)
    disc = Discriminator.from_teacher(teacher)
    x, ctx = tiny_inputs(teacher, batch=2, frames=2, h=4, w=4, seed=2)
    x_hat = x.clone().requires_grad_()
    loss, logs = gan_generator_loss(
        x_hat, teacher, disc, {"context": ctx}, Stage2Config(), torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert x_hat.grad.abs().max() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None and p.requires_grad for p in disc.parameters())  # restored, untouched
    teacher.blocks[0].attn1.to_q.weight.requires_grad_(True)
    with pytest.raises(InputError, match="frozen"):
        teacher_features(teacher, x, 0.5, ctx, (1,))


def test_discriminator_loss_decreases_on_separable_data():
    teacher = make_tiny_teacher(3).requires_grad_(False)
    disc = Discriminator.from_teacher(teacher)
    x, ctx = tiny_inputs(teacher, batch=4, frames=2, h=4, w=4, seed=3)
    batch = {"latents": x + 3.0, "context": ctx}  # real: shifted up; fake: shifted down
    fake = x - 3.0
    cfg = Stage2Config(dmd_shift=1.0)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss, logs = discriminator_loss(disc, teacher, fake, batch, cfg, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"discriminator loss {losses[0]:.3f} -> {losses[-1]:.3f}, accuracy {logs['d_accuracy'].item():.2f}")
    assert losses[-1] < 0.5 * losses[0] and logs["d_accuracy"].item() == 1.0
    assert all(p.grad is None for p in teacher.parameters())
