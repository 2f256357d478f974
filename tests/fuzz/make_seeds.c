/* Writes the image seeds of tests/fuzz/corpus/image/ (run once, by hand):
 *   cc -I/usr/include/stb tests/fuzz/make_seeds.c -lm -o /tmp/make_seeds && /tmp/make_seeds DIR */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    unsigned char px[8 * 6 * 4];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (unsigned char)(i * 37 + 11);
    char p[512];
    snprintf(p, sizeof p, "%s/rgb-8x6.png", argv[1]); stbi_write_png(p, 8, 6, 3, px, 8 * 3);
    snprintf(p, sizeof p, "%s/rgba-3x5.png", argv[1]); stbi_write_png(p, 3, 5, 4, px, 3 * 4);
    snprintf(p, sizeof p, "%s/grey-4x4.png", argv[1]); stbi_write_png(p, 4, 4, 1, px, 4);
    snprintf(p, sizeof p, "%s/grey-alpha-2x2.png", argv[1]); stbi_write_png(p, 2, 2, 2, px, 4);
    snprintf(p, sizeof p, "%s/one-pixel.png", argv[1]); stbi_write_png(p, 1, 1, 3, px, 3);
    snprintf(p, sizeof p, "%s/rgb-8x6.jpg", argv[1]); stbi_write_jpg(p, 8, 6, 3, px, 90);
    snprintf(p, sizeof p, "%s/grey-16x3.jpg", argv[1]); stbi_write_jpg(p, 16, 3, 1, px, 50);
    snprintf(p, sizeof p, "%s/one-pixel.jpg", argv[1]); stbi_write_jpg(p, 1, 1, 3, px, 75);
    return 0;
}
