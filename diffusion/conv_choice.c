/* fm_conv_choice: the kernels' convolution choice, for -v. */
#include "fmimage.h"

#include "kernels/kernels.h"

void fm_conv_choice(char *why, size_t why_size)
{
    kn_conv2d_choice(why, why_size);
}
