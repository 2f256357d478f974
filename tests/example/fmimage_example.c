/* The smallest program built on libfmimage: load a model, generate one
 * image, write it with its A1111 metadata. Built against the installed
 * pkg-config file by tests/test_install.c with the README's command:
 *   cc fmimage_example.c -o example $(pkg-config --cflags --libs fmimage) */
#include <fmimage.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT OUT.png\n", argv[0]);
        return 2;
    }
    fm_error err = {0};
    fm_model *model = fm_model_load(argv[1], &err);
    if (!model) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    fm_params p;
    fm_params_default(model, &p);
    p.prompt = argv[2];
    p.width = p.height = 64;
    p.steps = 4;
    p.seed = 42;
    uint8_t *rgb = malloc((size_t)p.width * p.height * 3);
    char *info = NULL;
    int rc = !rgb || fm_generate(model, &p, rgb, &err) ||
             !(info = fm_infotext(model, &p, "example", NULL, &err)) ||
             fm_png_write(argv[3], rgb, p.width, p.height, info, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    free(info);
    free(rgb);
    fm_model_free(model);
    return rc;
}
