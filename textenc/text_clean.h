/* text_clean: CLIP's text cleaning (openai/CLIP SimpleTokenizer.encode):
 * ftfy.fix_text, html.unescape twice, whitespace collapse, lower case, as
 * tests/data/README.md#text-cleaning describes. Works on arrays of Unicode code
 * points. Internal to textenc. */
#ifndef FM_TEXT_CLEAN_H
#define FM_TEXT_CLEAN_H

#include <stddef.h>
#include <stdint.h>

/* A growable array of code points. All functions returning int give 0 on
 * success and -1 when memory runs out. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} te_cps;

int te_cps_reserve(te_cps *b, size_t extra); /* room for extra more */
int te_cps_push(te_cps *b, uint32_t c);
int te_cps_append(te_cps *b, const uint32_t *c, size_t n);
int te_cps_push_utf8(te_cps *b, const char *s); /* s: valid UTF-8 */
void te_cps_free(te_cps *b);

/* UTF-8 bytes to code points. Each byte that does not start a well-formed
 * sequence (bad lead byte, truncated or overlong sequence, surrogate, above
 * U+10FFFF) becomes one U+FFFD. */
int te_utf8_to_cps(const char *s, size_t len, te_cps *out);
/* Appends the UTF-8 encoding of c to dst (needs 4 bytes); returns the length. */
int te_utf8_put(uint32_t c, char *dst);

/* Python's html.unescape (one call): out += unescaped in[0..n). */
int te_html_unescape(const uint32_t *in, size_t n, te_cps *out);
/* ftfy.fixes.unescape_html: out += in with `&#?[0-9A-Za-z]{1,24};` decoded. */
int te_ftfy_unescape_html(const te_cps *in, te_cps *out);

/* ftfy 6.3.1 fix_encoding on one segment (mojibake repair; text_mojibake.c). */
int te_ftfy_fix_encoding(const te_cps *in, te_cps *out);

/* The regex module's \s (Unicode White_Space). */
int te_is_regex_space(uint32_t c);

/* Python's str.isspace (also re's \s for str patterns): White_Space plus
 * U+001C..U+001F. */
int te_is_python_space(uint32_t c);

/* Python re's \w on str: letters, numbers (isalnum) and '_'. */
int te_is_python_word(uint32_t c);

/* The whole cleaning: text (UTF-8, len bytes) -> lower-cased, cleaned code points. */
int te_clip_clean(const char *text, size_t len, te_cps *out);

#endif
