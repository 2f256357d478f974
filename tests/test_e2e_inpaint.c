/* Masked img2img end to end (issue 18 items 1, 6): the fmimage CLI draws
 * each row of tests/data/e2e/inpaint.tsv on tiny-sd1 at 64x64 in fp32, and
 * the image must match the PNG that tools/ref/a1111_e2e.py drew with A1111's
 * img2img-inpaint steps (mask blur, masked content, only-masked crop and
 * paste, the latent mask at every step, the final overlay) over the original
 * ldm and k-diffusion in float64 (tools/ref/e2e_inpaint.sh): at least 99% of
 * the 8-bit values within 1 (tests/data/README.md "End-to-end inpainting").
 * The two sides were written independently; each row prints its share. */
#include "testutil.h"
#include "cliutil.h"

#define TABLE "tests/data/e2e/inpaint.tsv"
#define DIR "tests/data/e2e/inpaint"

static void test_rows(void **state)
{
    (void)state;
    FILE *f = fopen(TABLE, "r");
    assert_non_null(f);
    char tmp[512], line[1024];
    cu_tempdir(tmp, sizeof tmp, "e2e_inpaint");
    int rows = 0, header = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] == '#' || !line[0]) continue;
        if (!header++) continue; /* the column names */
        char *cell[10] = {0}, *s = line;
        int n = 0;
        /* empty cells (the negative prompt) are kept: split by hand */
        for (cell[n++] = s; n < 10 && (s = strchr(s, '\t')); cell[n++] = ++s) *s = 0;
        assert_int_equal(n, 10);
        char out[2600], ref[2600], init[256];
        snprintf(out, sizeof out, "%s/%s.png", tmp, cell[0]);
        snprintf(ref, sizeof ref, DIR "/%s.png", cell[0]);
        snprintf(init, sizeof init, DIR "/init.png");
        const char *args[64] = {"-m", "tests/data/tiny-sd1.safetensors", cell[7], "-n", cell[8],
                                "--sampler", cell[1], "--scheduler", cell[2], "--steps", cell[3], "--cfg", cell[4],
                                "--seed", cell[5], "--strength", cell[6], "-W", "64", "-H", "64",
                                "--precision", "fp32", "-i", init, "-o", out, "-q"};
        int k = 0;
        while (args[k]) k++;
        char paths[8][1024];
        int np = 0;
        for (char *tok = strtok(cell[9], " "); tok && k < 62; tok = strtok(NULL, " ")) {
            size_t L = strlen(tok);
            if (L > 4 && !strcmp(tok + L - 4, ".png") && np < 8) { /* a file of DIR */
                snprintf(paths[np], sizeof paths[np], DIR "/%s", tok);
                args[k++] = paths[np++];
            } else {
                args[k++] = tok;
            }
        }
        args[k] = NULL;
        char err[1024] = "";
        int rc = cu_run(args, err, sizeof err);
        if (rc) fail_msg("%s: exit %d: %s", cell[0], rc, err);
        double share = cu_png_within_1(out, ref);
        printf("  %-22s %.4f of the values within 1 LSB of A1111's\n", cell[0], share);
        assert_true(share >= 0.99);
        rows++;
    }
    fclose(f);
    assert_true(rows >= 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_rows)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
