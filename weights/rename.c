/* rename: diffusers AutoencoderKL names -> ldm (rename.h). The mapping is
 * the diffusers conversion script's, applied the way it applies it: every
 * (ldm, diffusers) pair replaced in turn as a substring, then for attention
 * tensors the attention pairs. Block indices are parsed instead of listed
 * so that any number of levels maps (the script lists SD's four); an index
 * ldm's VAE has no block for (a level past n_levels, a third mid resnet)
 * is not a VAE name. */
#include "weights/rename.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

int wt_vae_is_diffusers(const char *name)
{
    const char *r = starts(name, "vae.") ? name + 4 : name;
    return (starts(r, "encoder.") || starts(r, "decoder.")) &&
           (strstr(r, ".down_blocks.") || strstr(r, ".up_blocks.") || strstr(r, ".mid_block.") ||
            strstr(r, ".conv_norm_out."));
}

/* "N." at s: N, and s moved past the dot; -1 when not a number */
static int index_at(const char **s)
{
    char *end;
    long v = strtol(*s, &end, 10);
    if (end == *s || *end != '.' || v < 0 || v > 1000) return -1;
    *s = end + 1;
    return (int)v;
}

/* A resnet's own tensors: conv_shortcut is ldm's nin_shortcut. */
static int resnet_part(char *out, size_t size, const char *head, const char *rest)
{
    const char *tail = starts(rest, "conv_shortcut.") ? rest + 14 : NULL;
    int n = tail ? snprintf(out, size, "%snin_shortcut.%s", head, tail) : snprintf(out, size, "%s%s", head, rest);
    return n < (int)size ? 1 : -1;
}

/* mid_block.attentions.0.X: group_norm -> norm; query/to_q -> q, key/to_k -> k,
 * value/to_v -> v, proj_attn/to_out.0 -> proj_out (the older and the newer
 * diffusers attention names) */
static int attention_part(char *out, size_t size, const char *side, const char *rest, int *to_conv)
{
    static const char *const map[][2] = {
        {"group_norm.", "norm."}, {"query.", "q."}, {"key.", "k."}, {"value.", "v."}, {"proj_attn.", "proj_out."},
        {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (starts(rest, map[i][0])) {
            const char *tail = rest + strlen(map[i][0]);
            *to_conv = i > 0 && !strcmp(tail, "weight");
            return snprintf(out, size, "%smid.attn_1.%s%s", side, map[i][1], tail) < (int)size ? 1 : -1;
        }
    return 0;
}

/* The ldm name without first_stage_model.; *to_conv: a mid attention
 * q/k/v/proj_out weight (a Linear in diffusers, a 1x1 conv in ldm). */
static int ldm_name(char *out, size_t size, const char *name, int n_levels, int *to_conv)
{
    *to_conv = 0;
    if (starts(name, "vae.")) name += 4;
    if (starts(name, "quant_conv.") || starts(name, "post_quant_conv."))
        return snprintf(out, size, "%s", name) < (int)size ? 1 : -1;
    const char *side = starts(name, "encoder.") ? "encoder." : starts(name, "decoder.") ? "decoder." : NULL;
    if (!side) return 0;
    const char *r = name + 8;
    char head[96];
    if (starts(r, "conv_norm_out.")) return snprintf(out, size, "%snorm_out.%s", side, r + 14) < (int)size ? 1 : -1;
    if (starts(r, "conv_in.") || starts(r, "conv_out.")) return snprintf(out, size, "%s%s", side, r) < (int)size ? 1 : -1;
    if (starts(r, "mid_block.resnets.")) {
        r += 18;
        int j = index_at(&r);
        if (j < 0 || j > 1) return 0; /* ldm's mid: block_1, attn_1, block_2 */
        snprintf(head, sizeof head, "%smid.block_%d.", side, j + 1);
        return resnet_part(out, size, head, r);
    }
    if (starts(r, "mid_block.attentions.0.")) return attention_part(out, size, side, r + 23, to_conv);
    int enc = side[0] == 'e';
    const char *blocks = enc ? "down_blocks." : "up_blocks.";
    if (!starts(r, blocks)) return 0;
    r += strlen(blocks);
    int i = index_at(&r);
    if (i < 0 || i >= n_levels) return 0;
    int level = enc ? i : n_levels - 1 - i;
    const char *kind = enc ? "down" : "up";
    if (starts(r, "resnets.")) {
        r += 8;
        int j = index_at(&r);
        if (j < 0) return 0;
        snprintf(head, sizeof head, "%s%s.%d.block.%d.", side, kind, level, j);
        return resnet_part(out, size, head, r);
    }
    const char *sampler = enc ? "downsamplers.0." : "upsamplers.0.";
    if (starts(r, sampler))
        return snprintf(out, size, "%s%s.%d.%s.%s", side, kind, level, enc ? "downsample" : "upsample",
                        r + strlen(sampler)) < (int)size ? 1 : -1;
    return 0;
}

int wt_vae_diffusers_tensor(const wt_tensor *t, int n_levels, char *name, size_t size, wt_tensor *o)
{
    char ldm[480];
    int to_conv, k = ldm_name(ldm, sizeof ldm, t->name, n_levels, &to_conv);
    if (k != 1) return k;
    *o = *t;
    if (to_conv && t->ndim == 2) {
        o->ndim = 4;
        o->shape[2] = o->shape[3] = 1;
    }
    return snprintf(name, size, "first_stage_model.%s", ldm) < (int)size ? 1 : -1;
}
