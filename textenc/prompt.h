/* placeholder */
#include "textenc/tokenizer.h"
