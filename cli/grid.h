/* grid: A1111's image grid with axis labels (modules/images.py image_grid
 * and draw_grid_annotations) for the X/Y/Z plot. Text is drawn with
 * FreeType and DejaVu Sans, found at run time ($FMIMAGE_FONT, else the
 * Debian fonts-dejavu-core path); without a font the grid is drawn without
 * labels (grid_draw says so in note). */
#ifndef FM_CLI_GRID_H
#define FM_CLI_GRID_H

#include <stddef.h>
#include <stdint.h>

/* cells: nx * ny RGB images of w x h, row-major (cell ix + iy * nx, NULL
 * drawn black as A1111's missing cell). xlabels[nx] over the columns,
 * ylabels[ny] left of the rows ("" everywhere: no band). *out is malloc'd
 * RGB of *ow x *oh. Returns 0, or -1 with why. */
int grid_draw(const uint8_t *const *cells, int w, int h, int nx, int ny, const char *const *xlabels,
              const char *const *ylabels, uint8_t **out, int *ow, int *oh, char *note, size_t note_len, char *why,
              size_t why_len);

#endif
