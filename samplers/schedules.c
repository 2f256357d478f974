/* The discrete (DDPM) noise schedule of a model and the schedulers that pick
 * sampling sigmas from it: k-diffusion's DiscreteSchedule (get_sigmas,
 * sigma_to_t, t_to_sigma), get_sigmas_karras / _exponential, and ComfyUI's
 * sgm_uniform, simple and ddim_uniform. tests/data/README.md#schedules. */
#include "samplers/samplers.h"

#include <math.h>
#include <stdlib.h>

static int discrete_alloc(smp_discrete *d, int n, fm_error *err)
{
    d->n = n;
    d->sigmas = malloc((size_t)n * sizeof(double));
    d->log_sigmas = malloc((size_t)n * sizeof(double));
    if (!d->sigmas || !d->log_sigmas) {
        smp_discrete_free(d);
        return core_fail(err, FM_EINPUT, "schedule: out of memory");
    }
    return 0;
}

/* sigmas from alphas_cumprod given in double (either source's precision). */
static int discrete_from_ac(smp_discrete *d, const double *ac, int n, fm_error *err)
{
    d->sigmas = d->log_sigmas = NULL;
    if (n < 2)
        return core_fail(err, FM_EINPUT, "alphas_cumprod: %d timesteps, need at least 2", n);
    for (int i = 0; i < n; i++)
        if (!(ac[i] > 0 && ac[i] < 1) || (i > 0 && !(ac[i] < ac[i - 1])))
            return core_fail(err, FM_EINPUT, "alphas_cumprod[%d] = %g: not a decreasing value in (0,1)",
                           i, ac[i]);
    if (discrete_alloc(d, n, err))
        return FM_EINPUT;
    for (int i = 0; i < n; i++) {
        d->sigmas[i] = sqrt((1 - ac[i]) / ac[i]);
        d->log_sigmas[i] = log(d->sigmas[i]);
    }
    return 0;
}

int smp_discrete_init(smp_discrete *d, const float *alphas_cumprod, int n, fm_error *err)
{
    d->sigmas = d->log_sigmas = NULL;
    double *ac = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!ac)
        return core_fail(err, FM_EINPUT, "schedule: out of memory");
    for (int i = 0; i < n; i++)
        ac[i] = alphas_cumprod[i];
    int rc = discrete_from_ac(d, ac, n, err);
    free(ac);
    return rc;
}

/* beta_i of linspace(sqrt(start), sqrt(end), n)^2 (numpy linspace) */
static double scaled_linear_beta(double linear_start, double linear_end, int i, int n)
{
    double a = sqrt(linear_start), b = sqrt(linear_end);
    double root = i == n - 1 ? b : a + (b - a) * i / (n - 1);
    return root * root;
}

static int scaled_linear_ok(double linear_start, double linear_end, int n, fm_error *err)
{
    if (n < 2 || !(linear_start > 0) || !(linear_end < 1) || !(linear_start < linear_end))
        return core_fail(err, FM_EINPUT, "schedule: bad scaled_linear parameters (%g, %g, %d)",
                       linear_start, linear_end, n);
    return 0;
}

int smp_discrete_init_scaled_linear(smp_discrete *d, double linear_start, double linear_end, int n,
                                   fm_error *err)
{
    d->sigmas = d->log_sigmas = NULL;
    if (scaled_linear_ok(linear_start, linear_end, n, err))
        return FM_EINPUT;
    double *ac = malloc((size_t)n * sizeof(double));
    if (!ac)
        return core_fail(err, FM_EINPUT, "schedule: out of memory");
    double cumprod = 1;
    for (int i = 0; i < n; i++)
        ac[i] = cumprod *= 1 - scaled_linear_beta(linear_start, linear_end, i, n);
    int rc = discrete_from_ac(d, ac, n, err);
    free(ac);
    return rc;
}

void smp_scaled_linear_alphas_cumprod(float *alphas_cumprod, double linear_start, double linear_end,
                                     int n)
{
    double cumprod = 1;
    for (int i = 0; i < n; i++)
        alphas_cumprod[i] = (float)(cumprod *= 1 - scaled_linear_beta(linear_start, linear_end, i, n));
}

void smp_discrete_free(smp_discrete *d)
{
    free(d->sigmas);
    free(d->log_sigmas);
    d->sigmas = d->log_sigmas = NULL;
    d->n = 0;
}

double smp_discrete_sigma_min(const smp_discrete *d) { return d->sigmas[0]; }
double smp_discrete_sigma_max(const smp_discrete *d) { return d->sigmas[d->n - 1]; }

double smp_discrete_t_to_sigma(const smp_discrete *d, double t)
{
    t = (float)t; /* k-diffusion: t = t.float() */
    if (t <= 0)
        return d->sigmas[0];
    if (t >= d->n - 1)
        return d->sigmas[d->n - 1];
    int lo = (int)floor(t), hi = (int)ceil(t);
    double w = t - lo;
    return exp((1 - w) * d->log_sigmas[lo] + w * d->log_sigmas[hi]);
}

double smp_discrete_sigma_to_t(const smp_discrete *d, double sigma)
{
    double l = log(sigma);
    /* lo = (number of log_sigmas <= l) - 1, by bisection (increasing). */
    int below = 0, above = d->n;
    while (below < above) {
        int mid = (below + above) / 2;
        if (d->log_sigmas[mid] <= l)
            below = mid + 1;
        else
            above = mid;
    }
    int lo = below - 1;
    if (lo < 0)
        lo = 0;
    if (lo > d->n - 2)
        lo = d->n - 2;
    double w = (d->log_sigmas[lo] - l) / (d->log_sigmas[lo] - d->log_sigmas[lo + 1]);
    w = fmin(fmax(w, 0), 1);
    return lo + w;
}

/* numpy/torch linspace(a, b, n)[k]. */
static double linspace(double a, double b, int n, int k)
{
    if (n == 1)
        return a;
    if (k == n - 1)
        return b;
    return a + (b - a) * k / (n - 1);
}

static void sched_normal(const smp_discrete *d, int steps, double *s)
{
    for (int k = 0; k < steps; k++)
        s[k] = smp_discrete_t_to_sigma(d, linspace(d->n - 1, 0, steps, k));
}

static void sched_karras(const smp_discrete *d, int steps, double *s)
{
    const double rho = 7;
    double min_inv_rho = pow(smp_discrete_sigma_min(d), 1 / rho);
    double max_inv_rho = pow(smp_discrete_sigma_max(d), 1 / rho);
    for (int k = 0; k < steps; k++) {
        double ramp = linspace(0, 1, steps, k);
        s[k] = pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), rho);
    }
}

static void sched_exponential(const smp_discrete *d, int steps, double *s)
{
    double a = log(smp_discrete_sigma_max(d)), b = log(smp_discrete_sigma_min(d));
    for (int k = 0; k < steps; k++)
        s[k] = exp(linspace(a, b, steps, k));
}

/* linspace(n-1, 0, steps + 1) without its last element: never reaches t = 0. */
static void sched_sgm_uniform(const smp_discrete *d, int steps, double *s)
{
    for (int k = 0; k < steps; k++)
        s[k] = smp_discrete_t_to_sigma(d, linspace(d->n - 1, 0, steps + 1, k));
}

static void sched_simple(const smp_discrete *d, int steps, double *s)
{
    double ss = (double)d->n / steps;
    for (int k = 0; k < steps; k++)
        s[k] = d->sigmas[d->n - 1 - (int)(k * ss)];
}

/* ComfyUI ddim_uniform: every ss-th sigma from index 1 upwards, reversed. */
static int ddim_stride(const smp_discrete *d, int steps)
{
    int ss = d->n / steps;
    return ss < 1 ? 1 : ss;
}

static int ddim_count(const smp_discrete *d, int steps)
{
    return (d->n - 2) / ddim_stride(d, steps) + 1;
}

static void sched_ddim_uniform(const smp_discrete *d, int steps, double *s)
{
    int ss = ddim_stride(d, steps), m = ddim_count(d, steps);
    for (int k = 0; k < m; k++)
        s[m - 1 - k] = d->sigmas[1 + k * ss];
}

int smp_schedule_length(const smp_discrete *d, smp_scheduler_id s, int steps)
{
    if (steps < 1)
        return 0;
    return (s == FM_SCHED_DDIM_UNIFORM ? ddim_count(d, steps) : steps) + 1;
}

int smp_schedule(const smp_discrete *d, smp_scheduler_id s, int steps, double *sigmas, fm_error *err)
{
    static void (*const scheds[FM_SCHED_COUNT])(const smp_discrete *, int, double *) = {
        [FM_SCHED_NORMAL] = sched_normal,
        [FM_SCHED_KARRAS] = sched_karras,
        [FM_SCHED_EXPONENTIAL] = sched_exponential,
        [FM_SCHED_SGM_UNIFORM] = sched_sgm_uniform,
        [FM_SCHED_SIMPLE] = sched_simple,
        [FM_SCHED_DDIM_UNIFORM] = sched_ddim_uniform,
    };
    if ((unsigned)s >= FM_SCHED_COUNT) {
        core_fail(err, FM_EUSAGE, "scheduler %d: unknown", (int)s);
        return -1;
    }
    if (steps < 1) {
        core_fail(err, FM_EUSAGE, "steps %d: must be at least 1", steps);
        return -1;
    }
    int len = smp_schedule_length(d, s, steps);
    scheds[s](d, steps, sigmas);
    sigmas[len - 1] = 0;
    return len;
}
