/* Sampler and scheduler names: ComfyUI's identifiers, A1111's labels
 * (tests/data/README.md#sampler-names), and the public resolvers of fmimage.h. */
#include "samplers/samplers.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* a1111_default: the schedule A1111 (1.9+, sd_samplers_kdiffusion.py's
 * 'scheduler' option) uses for the sampler when its schedule type is
 * "Automatic": Karras for DPM++ 2M, DPM++ SDE, DPM++ 2S a, DPM2, DPM2 a;
 * Exponential for DPM++ 2M SDE; none (its discrete schedule, "Uniform")
 * for Euler, Euler a, Heun, LMS, LCM. */
typedef struct sampler_info {
    const char *name, *label;
    smp_scheduler_id a1111_default;
    int noisy, discards_penultimate;
} sampler_info;

static const sampler_info samplers[FM_SAMPLER_COUNT] = {
    [FM_SAMPLER_EULER] = {"euler", "Euler", FM_SCHED_NORMAL, 0, 0},
    [FM_SAMPLER_EULER_ANCESTRAL] = {"euler_ancestral", "Euler a", FM_SCHED_NORMAL, 1, 0},
    [FM_SAMPLER_HEUN] = {"heun", "Heun", FM_SCHED_NORMAL, 0, 0},
    [FM_SAMPLER_DPM_2] = {"dpm_2", "DPM2", FM_SCHED_KARRAS, 0, 1},
    [FM_SAMPLER_DPM_2_ANCESTRAL] = {"dpm_2_ancestral", "DPM2 a", FM_SCHED_KARRAS, 1, 1},
    [FM_SAMPLER_LMS] = {"lms", "LMS", FM_SCHED_NORMAL, 0, 0},
    [FM_SAMPLER_DPMPP_2M] = {"dpmpp_2m", "DPM++ 2M", FM_SCHED_KARRAS, 0, 0},
    [FM_SAMPLER_DPMPP_2S_ANCESTRAL] = {"dpmpp_2s_ancestral", "DPM++ 2S a", FM_SCHED_KARRAS, 1, 0},
    [FM_SAMPLER_DPMPP_2M_SDE] = {"dpmpp_2m_sde", "DPM++ 2M SDE", FM_SCHED_EXPONENTIAL, 1, 0},
    [FM_SAMPLER_DPMPP_SDE] = {"dpmpp_sde", "DPM++ SDE", FM_SCHED_KARRAS, 1, 0},
    [FM_SAMPLER_DDIM] = {"ddim", "DDIM", FM_SCHED_DDIM_UNIFORM, 0, 0},
    [FM_SAMPLER_LCM] = {"lcm", "LCM", FM_SCHED_NORMAL, 1, 0},
};

static const struct { const char *name, *label; } schedulers[FM_SCHED_COUNT] = {
    [FM_SCHED_NORMAL] = {"normal", "Uniform"},
    [FM_SCHED_KARRAS] = {"karras", "Karras"},
    [FM_SCHED_EXPONENTIAL] = {"exponential", "Exponential"},
    [FM_SCHED_SGM_UNIFORM] = {"sgm_uniform", "SGM Uniform"},
    [FM_SCHED_SIMPLE] = {"simple", "Simple"},
    [FM_SCHED_DDIM_UNIFORM] = {"ddim_uniform", "DDIM"},
};

/* Other spellings people type: A1111's "Normal"/"discrete" and its old k_ aliases. */
static const struct { const char *alias; int id; } scheduler_aliases[] = {
    {"discrete", FM_SCHED_NORMAL},
    {"Normal", FM_SCHED_NORMAL},
};
static const struct { const char *alias; int id; } sampler_aliases[] = {
    {"k_euler", FM_SAMPLER_EULER},
    {"k_euler_a", FM_SAMPLER_EULER_ANCESTRAL},
    {"euler_a", FM_SAMPLER_EULER_ANCESTRAL},
    {"k_heun", FM_SAMPLER_HEUN},
    {"k_dpm_2", FM_SAMPLER_DPM_2},
    {"k_dpm_2_a", FM_SAMPLER_DPM_2_ANCESTRAL},
    {"k_lms", FM_SAMPLER_LMS},
    {"k_dpmpp_2m", FM_SAMPLER_DPMPP_2M},
    {"k_dpmpp_2s_a", FM_SAMPLER_DPMPP_2S_ANCESTRAL},
    {"k_dpmpp_2m_sde", FM_SAMPLER_DPMPP_2M_SDE},
    {"k_dpmpp_sde", FM_SAMPLER_DPMPP_SDE},
};

/* Kept in step with the tables above (tests/test_samplers.c checks it). */
static const char sampler_list[] =
    "euler\tEuler\n"
    "euler_ancestral\tEuler a\n"
    "heun\tHeun\n"
    "dpm_2\tDPM2\n"
    "dpm_2_ancestral\tDPM2 a\n"
    "lms\tLMS\n"
    "dpmpp_2m\tDPM++ 2M\n"
    "dpmpp_2s_ancestral\tDPM++ 2S a\n"
    "dpmpp_2m_sde\tDPM++ 2M SDE\n"
    "dpmpp_sde\tDPM++ SDE\n"
    "ddim\tDDIM\n"
    "lcm\tLCM\n"
    "normal\tUniform\n"
    "karras\tKarras\n"
    "exponential\tExponential\n"
    "sgm_uniform\tSGM Uniform\n"
    "simple\tSimple\n"
    "ddim_uniform\tDDIM\n";

const char *fm_sampler_list(void) { return sampler_list; }

const char *smp_name(smp_id s)
{
    return (unsigned)s < FM_SAMPLER_COUNT ? samplers[s].name : NULL;
}

const char *smp_label(smp_id s)
{
    return (unsigned)s < FM_SAMPLER_COUNT ? samplers[s].label : NULL;
}

const char *smp_scheduler_name(smp_scheduler_id s)
{
    return (unsigned)s < FM_SCHED_COUNT ? schedulers[s].name : NULL;
}

const char *smp_scheduler_label(smp_scheduler_id s)
{
    return (unsigned)s < FM_SCHED_COUNT ? schedulers[s].label : NULL;
}

int smp_is_noisy(smp_id s)
{
    return (unsigned)s < FM_SAMPLER_COUNT && samplers[s].noisy;
}

smp_scheduler_id smp_default_scheduler(smp_id s)
{
    return (unsigned)s < FM_SAMPLER_COUNT ? samplers[s].a1111_default : FM_SCHED_NORMAL;
}

int smp_discards_penultimate_sigma(smp_id s)
{
    return (unsigned)s < FM_SAMPLER_COUNT && samplers[s].discards_penultimate;
}

int smp_find(const char *name)
{
    for (int s = 0; s < FM_SAMPLER_COUNT; s++)
        if (strcmp(name, samplers[s].name) == 0)
            return s;
    return -1;
}

int smp_scheduler_find(const char *name)
{
    for (int s = 0; s < FM_SCHED_COUNT; s++)
        if (strcmp(name, schedulers[s].name) == 0)
            return s;
    return -1;
}

/* name without surrounding blanks into buf; NULL when it does not fit. */
static const char *trimmed(const char *name, char *buf, size_t cap)
{
    while (isspace((unsigned char)*name))
        name++;
    size_t len = strlen(name);
    while (len > 0 && isspace((unsigned char)name[len - 1]))
        len--;
    if (len >= cap)
        return NULL;
    memcpy(buf, name, len);
    buf[len] = 0;
    return buf;
}

static int sampler_lookup(const char *name)
{
    for (int s = 0; s < FM_SAMPLER_COUNT; s++)
        if (!strcasecmp(name, samplers[s].name) || !strcasecmp(name, samplers[s].label))
            return s;
    for (size_t a = 0; a < sizeof sampler_aliases / sizeof sampler_aliases[0]; a++)
        if (!strcasecmp(name, sampler_aliases[a].alias))
            return sampler_aliases[a].id;
    return -1;
}

static int scheduler_lookup(const char *name)
{
    for (int s = 0; s < FM_SCHED_COUNT; s++)
        if (!strcasecmp(name, schedulers[s].name) || !strcasecmp(name, schedulers[s].label))
            return s;
    for (size_t a = 0; a < sizeof scheduler_aliases / sizeof scheduler_aliases[0]; a++)
        if (!strcasecmp(name, scheduler_aliases[a].alias))
            return scheduler_aliases[a].id;
    return -1;
}

static void copy_name(char out[32], const char *name)
{
    snprintf(out, 32, "%s", name);
}

/* "X Karras" (A1111 before 1.9): sampler X with a scheduler label suffix.
 * Only the suffixes A1111 used: Karras and Exponential. */
static int split_scheduler_suffix(const char *name, int *sampler, int *sched)
{
    static const int suffixes[] = {FM_SCHED_KARRAS, FM_SCHED_EXPONENTIAL};
    size_t len = strlen(name);
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        const char *label = schedulers[suffixes[k]].label;
        size_t sl = strlen(label);
        if (len > sl + 1 && name[len - sl - 1] == ' ' && !strcasecmp(name + len - sl, label)) {
            char head[64];
            snprintf(head, sizeof head, "%.*s", (int)(len - sl - 1), name);
            int s = sampler_lookup(head);
            if (s >= 0) {
                *sampler = s;
                *sched = suffixes[k];
                return 1;
            }
        }
    }
    return 0;
}

int fm_sampler_resolve(const char *name, char sampler_out[32], char scheduler_out[32], fm_error *err)
{
    core_error_clear(err);
    char buf[64];
    const char *n = name ? trimmed(name, buf, sizeof buf) : NULL;
    int sampler = n ? sampler_lookup(n) : -1, sched = -1;
    if (sampler < 0 && n)
        split_scheduler_suffix(n, &sampler, &sched);
    if (sampler < 0) {
        char valid[400] = "";
        size_t used = 0;
        for (int s = 0; s < FM_SAMPLER_COUNT && used < sizeof valid; s++)
            used += (size_t)snprintf(valid + used, sizeof valid - used, "%s%s (%s)", s ? ", " : "",
                                     samplers[s].name, samplers[s].label);
        return core_fail(err, FM_EUSAGE,
                       "sampler \"%.40s\": unknown; valid: %s; an A1111 label may end in "
                       "\" Karras\" or \" Exponential\"",
                       name ? name : "(null)", valid);
    }
    copy_name(sampler_out, samplers[sampler].name);
    if (scheduler_out)
        copy_name(scheduler_out, sched >= 0 ? schedulers[sched].name : "");
    return 0;
}

int fm_scheduler_resolve(const char *name, char scheduler_out[32], fm_error *err)
{
    core_error_clear(err);
    char buf[64];
    const char *n = name ? trimmed(name, buf, sizeof buf) : NULL;
    int sched = n ? scheduler_lookup(n) : -1;
    if (sched < 0) {
        char valid[256] = "";
        size_t used = 0;
        for (int s = 0; s < FM_SCHED_COUNT && used < sizeof valid; s++)
            used += (size_t)snprintf(valid + used, sizeof valid - used, "%s%s (%s)", s ? ", " : "",
                                     schedulers[s].name, schedulers[s].label);
        return core_fail(err, FM_EUSAGE, "scheduler \"%.40s\": unknown; valid: %s, discrete (= normal)",
                       name ? name : "(null)", valid);
    }
    copy_name(scheduler_out, schedulers[sched].name);
    return 0;
}

/* "" or "automatic": A1111's schedule type that means the sampler's own. */
static int is_automatic(const char *name)
{
    char buf[32];
    const char *n = trimmed(name, buf, sizeof buf);
    return n && (!n[0] || !strcasecmp(n, "automatic"));
}

int smp_pair(const char *sampler, const char *scheduler, smp_id *sampler_out,
                    smp_scheduler_id *scheduler_out, fm_error *err)
{
    char s[32], implied[32], sch[32];
    int rc = fm_sampler_resolve(sampler, s, implied, err);
    if (rc) return rc;
    *sampler_out = (smp_id)smp_find(s);
    if (implied[0]) {
        /* A1111's get_sampler_and_scheduler: the label's suffix wins. */
        *scheduler_out = (smp_scheduler_id)smp_scheduler_find(implied);
        return 0;
    }
    if (!scheduler || is_automatic(scheduler)) {
        *scheduler_out = smp_default_scheduler(*sampler_out);
        return 0;
    }
    if ((rc = fm_scheduler_resolve(scheduler, sch, err))) return rc;
    *scheduler_out = (smp_scheduler_id)smp_scheduler_find(sch);
    return 0;
}
