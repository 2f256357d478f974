/* Placeholder until the CLI lands. */
#include <stdio.h>
#include "fmimage.h"
int main(void) { printf("fmimage %s\n", FM_VERSION); return 0; }
