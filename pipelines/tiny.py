"""Tiny random Wan and Flux pipelines built in-process from configs: no download, no network,
seconds on a CPU. The weights are random, so the output is noise-like — these exist to try the
command line and the integration end to end, and for tests."""

from __future__ import annotations

import torch

# A word-level vocabulary is enough for a random text encoder: unknown words map to <unk>.
_WORDS = ("a an the of and with in on at under over fox cat dog bird horse person car tree "
          "snow forest city river sea sky mountain street night day sunset runs jumps sits walks "
          "flies red blue green white black big small old young beautiful").split()

#: What the embedded default says about itself, wherever its output is shown.
RANDOM_WEIGHTS_NOTICE = (
    "the built-in tiny pipeline has RANDOM weights: its output is noise, not a picture of your "
    "prompt. Point --model at a diffusers folder or hub id (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) "
    "for real generation."
)


def tiny_tokenizer(max_length: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)


def tiny_wan_pipeline(seed: int = 0, image_to_video: bool = False):
    """A Wan 2.1 text-to-video pipeline (or image-to-video, with a tiny CLIP image encoder) with
    ~1M random parameters."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(512)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    image_dim = 32 if image_to_video else None
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32,
        in_channels=36 if image_to_video else 16, out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64,
        num_layers=4, cross_attn_norm=True, rope_max_seq_len=64, image_dim=image_dim,
        added_kv_proj_dim=64 if image_to_video else None)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    common = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                  transformer=transformer)
    if not image_to_video:
        return WanPipeline(**common)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=image_dim, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32))
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(image_processor=image_processor, image_encoder=image_encoder, **common)


def tiny_flux_pipeline(seed: int = 0):
    """A FLUX.1 text-to-image pipeline with ~1M random parameters."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(77)
    tokenizer_2 = tiny_tokenizer(64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, pad_token_id=0,
        bos_token_id=1, eos_token_id=1))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16],
                        layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                        transformer=transformer)
