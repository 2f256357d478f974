/* placeholder */
#include "textenc/text_clean.h"
int fm_ftfy_fix_encoding(const fm_cps *in, fm_cps *out) { return fm_cps_append(out, in->v, in->n); }
