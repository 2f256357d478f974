#include "diffusion/detect.h"
#include "diffusion/detect_meta.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Tensor lookups by formatted name; `need` also checks the shape (-1 = any). */
typedef struct probe {
    const wt_source *st;
    fm_error *err;
} probe;

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static const wt_tensor *vfind(const probe *p, char *name, size_t len, const char *fmt, va_list ap)
{
    int n = vsnprintf(name, len, fmt, ap);
    if (n < 0 || (size_t)n >= len) return NULL;
    return wt_find(p->st, name);
}

static const wt_tensor *find(const probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const wt_tensor *find(const probe *p, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    const wt_tensor *t = vfind(p, name, sizeof name, fmt, ap);
    va_end(ap);
    return t;
}

static const wt_tensor *need(const probe *p, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const wt_tensor *need(const probe *p, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name) {
        wt_fail(p->err, p->st, "tensor name too long");
        return NULL;
    }
    return wt_require(p->st, name, ndim, shape, p->err);
}

/* Is there any tensor whose name starts with the formatted prefix? */
static int has_prefix(const probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int has_prefix(const probe *p, const char *fmt, ...)
{
    char pre[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    return wt_has_prefix(p->st, pre);
}

static int count_indexed(const probe *p, const char *fmt_prefix, const char *suffix)
{
    int n = 0;
    char f[256];
    snprintf(f, sizeof f, "%s%%d.%s", fmt_prefix, suffix);
    while (n < 10000 && find(p, f, n)) n++;
    return n;
}

/* "PATH: why" (weights/source.h), the file named once for every message. */
#define bad(p, ...) wt_fail((p)->err, (p)->st, __VA_ARGS__)

#define TRY(x) do { if (!(x)) return FM_EINPUT; } while (0)

/* ---- U-Net (ldm/sgm openaimodel.UNetModel) ---- */

/* ResBlock at blk ("...input_blocks.1.0."): cin -> *cout channels (the
 * binder checks its other tensors against the config). */
static int unet_resblock(const probe *p, const char *blk, int64_t cin, int64_t *cout)
{
    const wt_tensor *t;
    TRY(t = need(p, 4, SHAPE(-1, cin, 3, 3), "%sin_layers.2.weight", blk));
    *cout = t->shape[0];
    return 0;
}

/* SpatialTransformer at blk with c channels, or none (*depth = 0). */
static int unet_transformer(const probe *p, const char *blk, int64_t c, wt_unet_config *u, int *depth)
{
    int d = 0;
    while (d < 1000 && find(p, "%stransformer_blocks.%d.attn1.to_q.weight", blk, d)) d++;
    *depth = d;
    if (!d) return 0;
    const wt_tensor *t = find(p, "%sproj_in.weight", blk);
    if (!t) TRY(need(p, 2, SHAPE(c, c), "%sproj_in.weight", blk));
    int linear = t->ndim == 2;
    if (u->use_linear_in_transformer < 0) u->use_linear_in_transformer = linear;
    if (linear != u->use_linear_in_transformer)
        return bad(p, "%sproj_in: linear and 1x1-conv projections mixed in one U-Net", blk);
    if (u->context_dim <= 0) {
        TRY(t = need(p, 2, SHAPE(c, -1), "%stransformer_blocks.0.attn2.to_k.weight", blk));
        u->context_dim = (int)t->shape[1];
    }
    return 0;
}

static int infer_unet(const probe *p, wt_unet_config *u)
{
    const char *P = "model.diffusion_model.";
    snprintf(u->prefix, sizeof u->prefix, "%s", P);
    const wt_tensor *t;
    char b[128];
    int rc;
    TRY(t = need(p, 4, SHAPE(-1, -1, 3, 3), "%sinput_blocks.0.0.weight", P));
    int64_t mc = t->shape[0];
    u->model_channels = (int)mc;
    u->in_channels = (int)t->shape[1];
    u->adm_in_channels = 0;
    if (find(p, "%slabel_emb.0.0.weight", P)) {
        TRY(t = need(p, 2, SHAPE(-1, -1), "%slabel_emb.0.0.weight", P));
        u->adm_in_channels = (int)t->shape[1];
    }
    u->use_linear_in_transformer = -1;
    u->context_dim = 0;

    /* Input blocks: per level num_res_blocks x [ResBlock, SpatialTransformer?],
     * then a Downsample except after the last level. */
    int64_t skip[128], ch = mc;
    int ns = 0, level = 0, nres[FM_MAX_LEVELS] = {0}, blk = 1;
    skip[ns++] = mc;
    for (;; blk++) {
        snprintf(b, sizeof b, "%sinput_blocks.%d.", P, blk);
        if (ns >= 120) return bad(p, "%s: too many U-Net blocks", b);
        if (find(p, "%s0.op.weight", b)) {
            if (!nres[level]) return bad(p, "%s0.op: downsampling a level without ResBlocks", b);
            if (++level >= FM_MAX_LEVELS) return bad(p, "U-Net has more than %d levels", FM_MAX_LEVELS);
            skip[ns++] = ch;
            continue;
        }
        if (!find(p, "%s0.in_layers.2.weight", b)) break;
        int64_t c;
        int depth;
        char sub[140];
        snprintf(sub, sizeof sub, "%s0.", b);
        if ((rc = unet_resblock(p, sub, ch, &c))) return rc;
        snprintf(sub, sizeof sub, "%s1.", b);
        if ((rc = unet_transformer(p, sub, c, u, &depth))) return rc;
        if (!nres[level]) {
            if (c % mc) return bad(p, "%s0: %lld channels, not a multiple of model_channels %lld", b, (long long)c, (long long)mc);
            u->channel_mult[level] = (int)(c / mc);
            u->transformer_depth[level] = depth;
        } else if (c != mc * u->channel_mult[level]) {
            return bad(p, "%s0: %lld channels, its level has %lld", b, (long long)c, (long long)(mc * u->channel_mult[level]));
        } else if (depth != u->transformer_depth[level]) {
            return bad(p, "%s1: %d transformer blocks, its level has %d", b, depth, u->transformer_depth[level]);
        }
        nres[level]++;
        skip[ns++] = ch = c;
    }
    if (!nres[level]) return bad(p, "%sinput_blocks: the last level has no ResBlock", P);
    if (has_prefix(p, "%sinput_blocks.%d.", P, blk)) return bad(p, "%sinput_blocks.%d: not a ResBlock or Downsample", P, blk);
    u->n_levels = level + 1;
    u->num_res_blocks = nres[0];
    for (int l = 1; l < u->n_levels; l++)
        if (nres[l] != nres[0])
            return bad(p, "U-Net level %d has %d ResBlocks, level 0 has %d", l, nres[l], nres[0]);

    /* Middle: ResBlock, SpatialTransformer, ResBlock. */
    int64_t c;
    snprintf(b, sizeof b, "%smiddle_block.0.", P);
    if ((rc = unet_resblock(p, b, ch, &c))) return rc;
    if (c != ch) return bad(p, "%s: %lld channels, expected %lld", b, (long long)c, (long long)ch);
    snprintf(b, sizeof b, "%smiddle_block.1.", P);
    if ((rc = unet_transformer(p, b, ch, u, &u->transformer_depth_middle))) return rc;
    snprintf(b, sizeof b, "%smiddle_block.%d.", P, u->transformer_depth_middle ? 2 : 1);
    if ((rc = unet_resblock(p, b, ch, &c))) return rc;
    if (c != ch) return bad(p, "%s: %lld channels, expected %lld", b, (long long)c, (long long)ch);

    /* Output blocks: per level num_res_blocks + 1 x [ResBlock on cat(h, skip),
     * SpatialTransformer?, Upsample at the level's end except level 0]. */
    int o = 0;
    for (int l = u->n_levels - 1; l >= 0; l--)
        for (int j = 0; j <= u->num_res_blocks; j++, o++) {
            char sub[140];
            snprintf(b, sizeof b, "%soutput_blocks.%d.", P, o);
            snprintf(sub, sizeof sub, "%s0.", b);
            if ((rc = unet_resblock(p, sub, ch + skip[--ns], &c))) return rc;
            if (c != mc * u->channel_mult[l])
                return bad(p, "%s0: %lld channels, level %d has %lld", b, (long long)c, l, (long long)(mc * u->channel_mult[l]));
            int depth;
            snprintf(sub, sizeof sub, "%s1.", b);
            if ((rc = unet_transformer(p, sub, c, u, &depth))) return rc;
            if (depth != u->transformer_depth[l])
                return bad(p, "%s1: %d transformer blocks, level %d has %d", b, depth, l, u->transformer_depth[l]);
            ch = c;
        }
    if (has_prefix(p, "%soutput_blocks.%d.", P, o)) return bad(p, "%soutput_blocks.%d: one output block too many", P, o);
    TRY(t = need(p, 4, SHAPE(-1, ch, 3, 3), "%sout.2.weight", P));
    u->out_channels = (int)t->shape[0];
    if (u->use_linear_in_transformer < 0) u->use_linear_in_transformer = 0;
    return 0;
}

/* ---- VAE (ldm AutoencoderKL Encoder/Decoder) ---- */

static int infer_vae(const probe *p, wt_vae_config *v)
{
    const char *P = "first_stage_model.";
    snprintf(v->prefix, sizeof v->prefix, "%s", P);
    const wt_tensor *t;
    char b[160];
    TRY(t = need(p, 4, SHAPE(-1, -1, 3, 3), "%sdecoder.conv_in.weight", P));
    int64_t top = t->shape[0];
    v->z_channels = (int)t->shape[1];
    TRY(t = need(p, 4, SHAPE(v->z_channels, -1, 1, 1), "%spost_quant_conv.weight", P));
    v->embed_dim = (int)t->shape[1];
    TRY(t = need(p, 4, SHAPE(-1, -1, 3, 3), "%sdecoder.conv_out.weight", P));
    v->out_ch = (int)t->shape[0];
    int64_t c0 = t->shape[1];
    snprintf(b, sizeof b, "%sdecoder.up.", P);
    v->n_levels = count_indexed(p, b, "block.0.conv1.weight");
    if (v->n_levels < 1 || v->n_levels > FM_MAX_LEVELS)
        return bad(p, "%sdecoder.up: %d levels (1..%d supported)", P, v->n_levels, FM_MAX_LEVELS);
    snprintf(b, sizeof b, "%sdecoder.up.0.block.", P);
    v->num_res_blocks = count_indexed(p, b, "conv1.weight") - 1;
    if (v->num_res_blocks < 1) return bad(p, "%sdecoder.up.0: fewer than 2 ResnetBlocks", P);
    const wt_tensor *enc = find(p, "%sencoder.conv_in.weight", P);
    v->has_encoder = enc != NULL;
    if (enc) TRY(enc = need(p, 4, SHAPE(-1, -1, 3, 3), "%sencoder.conv_in.weight", P));
    int64_t ch = enc ? enc->shape[0] : c0; /* without encoder: ch_mult[0] = 1 */
    v->ch = (int)ch;
    v->in_channels = enc ? (int)enc->shape[1] : 3;
    for (int l = 0; l < v->n_levels; l++) {
        TRY(t = need(p, 4, SHAPE(-1, -1, 3, 3), "%sdecoder.up.%d.block.0.conv2.weight", P, l));
        if (t->shape[0] % ch) return bad(p, "%sdecoder.up.%d: %lld channels, not a multiple of ch %lld", P, l, (long long)t->shape[0], (long long)ch);
        v->ch_mult[l] = (int)(t->shape[0] / ch);
    }
    v->latent_factor = 1 << (v->n_levels - 1);

    /* Decoder: mid at the top width, up levels from the last to level 0
     * (the binder checks every block against these). */
    if (top != ch * v->ch_mult[v->n_levels - 1])
        return bad(p, "%sdecoder.conv_in: %lld channels, the last level has %lld", P, (long long)top, (long long)(ch * v->ch_mult[v->n_levels - 1]));
    for (int l = v->n_levels - 1; l >= 0; l--)
        if (find(p, "%sdecoder.up.%d.block.%d.conv1.weight", P, l, v->num_res_blocks + 1))
            return bad(p, "%sdecoder.up.%d: more ResnetBlocks than level 0", P, l);
    if (c0 != ch * v->ch_mult[0])
        return bad(p, "%sdecoder.conv_out: %lld input channels, expected %lld", P, (long long)c0, (long long)(ch * v->ch_mult[0]));

    /* Encoder (img2img only): the same levels; conv_out says double_z. */
    v->double_z = 1;
    if (!enc) return 0;
    if (find(p, "%sencoder.down.%d.block.0.conv1.weight", P, v->n_levels))
        return bad(p, "%sencoder: more levels than the decoder", P);
    TRY(t = need(p, 4, SHAPE(-1, top, 3, 3), "%sencoder.conv_out.weight", P));
    if (t->shape[0] != v->z_channels && t->shape[0] != 2 * v->z_channels)
        return bad(p, "%sencoder.conv_out: %lld outputs for z_channels %d", P, (long long)t->shape[0], v->z_channels);
    v->double_z = t->shape[0] == 2 * v->z_channels;
    return 0;
}

/* ---- text towers ---- */

/* Hugging Face CLIPTextModel names under prefix P ("...text_model."). */
static int infer_clip_hf(const probe *p, wt_text_config *tc, const char *P)
{
    const wt_tensor *t;
    snprintf(tc->prefix, sizeof tc->prefix, "%s", P);
    tc->kind = FM_TEXT_CLIP;
    TRY(t = need(p, 2, SHAPE(-1, -1), "%sembeddings.token_embedding.weight", P));
    int64_t w = t->shape[1];
    tc->vocab_size = (int)t->shape[0];
    tc->width = (int)w;
    TRY(t = need(p, 2, SHAPE(-1, w), "%sembeddings.position_embedding.weight", P));
    tc->max_length = (int)t->shape[0];
    char b[160];
    snprintf(b, sizeof b, "%sencoder.layers.", P);
    tc->layers = count_indexed(p, b, "self_attn.q_proj.weight");
    if (tc->layers < 1) return bad(p, "%sencoder.layers.0: missing", P);
    TRY(t = need(p, 2, SHAPE(-1, w), "%sencoder.layers.0.mlp.fc1.weight", P));
    int64_t mlp = t->shape[0];
    tc->intermediate_size = (int)mlp;
    if (has_prefix(p, "%sencoder.layers.%d.", P, tc->layers))
        return bad(p, "%sencoder.layers.%d: incomplete layer", P, tc->layers);
    tc->projection_dim = 0;
    tc->act_quick_gelu = 1;
    tc->pad_token = 49407;
    return 0;
}

/* open_clip text tower names under prefix P ("...model."). */
static int infer_openclip(const probe *p, wt_text_config *tc, const char *P)
{
    const wt_tensor *t;
    snprintf(tc->prefix, sizeof tc->prefix, "%s", P);
    tc->kind = FM_TEXT_OPENCLIP;
    TRY(t = need(p, 2, SHAPE(-1, -1), "%stoken_embedding.weight", P));
    int64_t w = t->shape[1];
    tc->vocab_size = (int)t->shape[0];
    tc->width = (int)w;
    TRY(t = need(p, 2, SHAPE(-1, w), "%spositional_embedding", P));
    tc->max_length = (int)t->shape[0];
    char b[160];
    snprintf(b, sizeof b, "%stransformer.resblocks.", P);
    tc->layers = count_indexed(p, b, "attn.in_proj_weight");
    if (tc->layers < 1) return bad(p, "%stransformer.resblocks.0: missing", P);
    TRY(t = need(p, 2, SHAPE(-1, w), "%stransformer.resblocks.0.mlp.c_fc.weight", P));
    int64_t mlp = t->shape[0];
    tc->intermediate_size = (int)mlp;
    if (has_prefix(p, "%stransformer.resblocks.%d.", P, tc->layers))
        return bad(p, "%stransformer.resblocks.%d: incomplete block", P, tc->layers);
    tc->projection_dim = 0;
    if (find(p, "%stext_projection", P)) {
        TRY(t = need(p, 2, SHAPE(w, -1), "%stext_projection", P));
        tc->projection_dim = (int)t->shape[1];
    }
    tc->act_quick_gelu = 0;
    tc->pad_token = 0;
    return 0;
}

/* ---- family ---- */

static const char *const CLIP_SD1 = "cond_stage_model.transformer.text_model.";
static const char *const OPENCLIP_SD2 = "cond_stage_model.model.";
static const char *const OPENCLIP_TURBO = "conditioner.embedders.0.model.";
static const char *const CLIP_SDXL = "conditioner.embedders.0.transformer.text_model.";
static const char *const BIGG_SDXL = "conditioner.embedders.1.model.";

static int detect_family(const probe *p, fm_family *family)
{
    if (find(p, "%stoken_embedding.weight", BIGG_SDXL) || find(p, "model.diffusion_model.label_emb.0.0.weight")) {
        if (find(p, "%stoken_embedding.weight", OPENCLIP_TURBO))
            return bad(p, "an SDXL refiner (or unknown sgm model), which is not supported");
        *family = FM_FAMILY_SDXL;
    } else if (find(p, "%stoken_embedding.weight", OPENCLIP_TURBO)) {
        *family = FM_FAMILY_SD_TURBO;
    } else if (find(p, "%stoken_embedding.weight", OPENCLIP_SD2)) {
        *family = FM_FAMILY_SD2;
    } else if (find(p, "%sembeddings.token_embedding.weight", CLIP_SD1)) {
        *family = FM_FAMILY_SD1;
    } else if (!find(p, "model.diffusion_model.input_blocks.0.0.weight")) {
        return bad(p, "not a Stable Diffusion checkpoint (no model.diffusion_model.* U-Net tensors)");
    } else {
        return bad(p, "no known text encoder (cond_stage_model.* or conditioner.embedders.*)");
    }
    return 0;
}

/* What the family's reference code does that the shapes cannot show. */
static void family_semantics(wt_model_config *cfg)
{
    fm_family f = cfg->family;
    wt_unet_config *u = &cfg->unet;
    if (f == FM_FAMILY_SD1) {
        u->num_heads = 8;
        u->num_head_channels = -1;
    } else {
        u->num_heads = -1;
        u->num_head_channels = 64;
    }
    cfg->vae.scale_factor = f == FM_FAMILY_SDXL ? 0.13025f : 0.18215f;
    for (int i = 0; i < cfg->n_text; i++) {
        wt_text_config *t = &cfg->text[i];
        /* CLIP-L 12, OpenCLIP-H 16, bigG 20 heads: all 64 wide. */
        t->heads = t->width >= 64 ? t->width / 64 : 1;
        t->layer_norm_eps = 1e-5f;
        t->penultimate = f != FM_FAMILY_SD1;
        t->final_ln_on_output = f != FM_FAMILY_SDXL;
        /* A1111 builds SD 2.x's OpenCLIP ViT-H with its 24 layers and stops
         * before the last; a file holding 23 (what diffusers'
         * convert_diffusers_to_original_stable_diffusion.py makes of a
         * diffusers folder, whose tower lacks the unused layer) runs all 23. */
        if ((f == FM_FAMILY_SD2 || f == FM_FAMILY_SD_TURBO) && t->width == 1024 && t->layers == 23) t->penultimate = 0;
    }
    /* SD 2.x: eps or v is probed at load, as A1111 does, except for an
     * inpainting U-Net (512-inpainting-ema), which A1111 always runs with
     * v2-inpainting-inference.yaml: eps. */
    int inpainting = u->in_channels == 2 * cfg->vae.embed_dim + 1;
    cfg->prediction = f == FM_FAMILY_SD2 && !inpainting ? FM_PRED_AUTO : FM_PRED_EPS;
    cfg->linear_start = 0.00085;
    cfg->linear_end = 0.012;
    cfg->timesteps = 1000;
}

static int check_cross(const probe *p, const wt_model_config *cfg)
{
    const wt_unet_config *u = &cfg->unet;
    int ctx = cfg->text[0].width + (cfg->n_text > 1 ? cfg->text[1].width : 0);
    if (u->context_dim && u->context_dim != ctx)
        return bad(p, "U-Net cross-attention context is %d wide, the text encoder%s give%s %d",
                   u->context_dim, cfg->n_text > 1 ? "s" : "", cfg->n_text > 1 ? "" : "s", ctx);
    /* an inpainting U-Net (ldm's LatentInpaintDiffusion, SDXL inpainting
     * 0.1) also takes the mask and the masked image's latent: 2c + 1 in */
    int inpainting = u->in_channels == 2 * cfg->vae.embed_dim + 1;
    if ((u->in_channels != cfg->vae.embed_dim && !inpainting) || u->out_channels != cfg->vae.embed_dim)
        return bad(p, "U-Net has %d->%d channels, the VAE latent %d (an inpainting U-Net takes %d)",
                   u->in_channels, u->out_channels, cfg->vae.embed_dim, 2 * cfg->vae.embed_dim + 1);
    if (cfg->family == FM_FAMILY_SDXL) {
        int size_part = u->adm_in_channels - cfg->text[1].projection_dim;
        if (!u->adm_in_channels || size_part <= 0 || size_part % 6)
            return bad(p, "label_emb takes %d inputs, not the pooled text (%d) plus 6 size embeddings",
                       u->adm_in_channels, cfg->text[1].projection_dim);
    } else if (u->adm_in_channels) {
        return bad(p, "model.diffusion_model.label_emb in a %s checkpoint", df_family_str(cfg->family));
    }
    for (int i = 0; i < cfg->n_text; i++) {
        const wt_text_config *t = &cfg->text[i];
        if (t->heads < 1 || t->width % t->heads)
            return bad(p, "text encoder %d: width %d not divisible into %d heads", i, t->width, t->heads);
        if (t->max_length < 77)
            return bad(p, "%s: %d positions, fewer than 77", t->prefix, t->max_length);
        if (t->vocab_size < 49408)
            return bad(p, "%s: vocabulary of %d, the CLIP tokenizer needs 49408", t->prefix, t->vocab_size);
    }
    /* Heads from the config must split every attention width. */
    for (int l = 0; l <= u->n_levels; l++) {
        int depth = l < u->n_levels ? u->transformer_depth[l] : u->transformer_depth_middle;
        int c = u->model_channels * u->channel_mult[l < u->n_levels ? l : u->n_levels - 1];
        if (!depth) continue;
        if (u->num_heads > 0 && c % u->num_heads)
            return bad(p, "U-Net: %d channels not divisible into num_heads %d", c, u->num_heads);
        if (u->num_heads <= 0 && u->num_head_channels > 0 && c % u->num_head_channels && c > u->num_head_channels)
            return bad(p, "U-Net: %d channels not divisible into heads of %d", c, u->num_head_channels);
    }
    return 0;
}

/* Timesteps from the stored schedule buffers, when present. */
static int schedule_from_buffers(const probe *p, wt_model_config *cfg)
{
    static const char *const names[] = {"alphas_cumprod", "betas", "denoiser.sigmas"};
    for (int i = 0; i < 3; i++) {
        const wt_tensor *t = find(p, "%s", names[i]);
        if (!t) continue;
        if (t->ndim != 1 || t->shape[0] < 2 || t->shape[0] > 100000)
            return bad(p, "tensor %s: shape is not [timesteps]", names[i]);
        cfg->timesteps = (int)t->shape[0];
        return 0;
    }
    return 0;
}

/* Strings from the file may appear in a message: keep it one line. */
static int one_line(int rc, fm_error *err)
{
    if (rc && err)
        for (char *c = err->msg; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    return rc;
}

static int detect_config(const wt_source *st, wt_model_config *cfg, fm_error *err);

int df_detect_config(const wt_source *st, wt_model_config *cfg, fm_error *err)
{
    return one_line(detect_config(st, cfg, err), err);
}

static int detect_config(const wt_source *st, wt_model_config *cfg, fm_error *err)
{
    probe p = {st, err};
    memset(cfg, 0, sizeof *cfg);
    int rc;
    if ((rc = detect_family(&p, &cfg->family))) return rc;
    switch (cfg->family) {
    case FM_FAMILY_SD1: cfg->n_text = 1; rc = infer_clip_hf(&p, &cfg->text[0], CLIP_SD1); break;
    case FM_FAMILY_SD2: cfg->n_text = 1; rc = infer_openclip(&p, &cfg->text[0], OPENCLIP_SD2); break;
    case FM_FAMILY_SD_TURBO: cfg->n_text = 1; rc = infer_openclip(&p, &cfg->text[0], OPENCLIP_TURBO); break;
    default:
        cfg->n_text = 2;
        if (!(rc = infer_clip_hf(&p, &cfg->text[0], CLIP_SDXL)))
            rc = infer_openclip(&p, &cfg->text[1], BIGG_SDXL);
    }
    if (rc) return rc;
    if (cfg->family == FM_FAMILY_SDXL && !need(&p, 2, SHAPE(-1, -1), "model.diffusion_model.label_emb.0.0.weight"))
        return FM_EINPUT; /* the pooled-text and size conditioning */
    if ((rc = infer_unet(&p, &cfg->unet))) return rc;
    if ((rc = infer_vae(&p, &cfg->vae))) return rc;
    family_semantics(cfg);
    if ((rc = schedule_from_buffers(&p, cfg))) return rc;
    df_family_defaults(cfg->family, cfg->prediction, &cfg->defaults);
    const char *meta = wt_meta(st, "fmimage.config");
    if (meta && (rc = df_config_apply_meta(meta, cfg, st, err))) return rc;
    return check_cross(&p, cfg);
}

int64_t df_count_params(const wt_source *st, const char *prefix)
{
    size_t len = strlen(prefix);
    int64_t n = 0;
    for (int i = 0; i < wt_count(st); i++) {
        const wt_tensor *t = wt_at(st, i);
        if (wt_is_float(t->dtype) && !strncmp(t->name, prefix, len)) n += wt_numel(t);
    }
    return n;
}
