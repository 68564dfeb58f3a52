"""Tiny random Wan and Flux transformers built from configs (no download), with matching inputs."""

import torch
from diffusers import FluxTransformer2DModel, WanTransformer3DModel


def tiny_wan(image_to_video: bool = False, layers: int = 4, seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=layers, cross_attn_norm=True,
        image_dim=32 if image_to_video else None, added_kv_proj_dim=64 if image_to_video else None,
        rope_max_seq_len=64,
    ).eval()


def wan_inputs(image_to_video: bool = False, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "hidden_states": torch.randn(1, 4, 3, 8, 8, generator=g),  # 3 latent frames of 8x8: 48 tokens
        "timestep": torch.tensor([500]),
        # I2V processors split the context as [image tokens, 512 text tokens]
        "encoder_hidden_states": torch.randn(1, 512 if image_to_video else 12, 32, generator=g),
    }
    if image_to_video:
        inputs["encoder_hidden_states_image"] = torch.randn(1, 257, 32, generator=g)
    return inputs


def tiny_flux(seed: int = 0, head_dim: int = 16) -> FluxTransformer2DModel:
    """head_dim 16, or 32 (the smallest the fused norm + RoPE + quantization kernel takes)."""
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=2, num_single_layers=3, attention_head_dim=head_dim,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6) if head_dim == 16 else (8, 12, 12),
    ).eval()


def flux_inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(6.0), torch.arange(6.0), indexing="ij"), -1)
    return {
        "hidden_states": torch.randn(1, 36, 8, generator=g),
        "encoder_hidden_states": torch.randn(1, 10, 32, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(10, 3),
    }
