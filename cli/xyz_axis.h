/* xyz_axis: the values of an X/Y/Z plot axis as A1111's scripts/xyz_grid.py
 * reads them (Script.run's process_axis, "Use text inputs" mode): the text
 * split as one CSV record per line (Python csv, excel dialect), each field
 * stripped; for number axes each field a range (int: `1-4`, `1-10 (+2)`
 * range(), `1-10 [5]` np.linspace truncated; float: the same with decimals,
 * np.arange / np.linspace) or a single number (Python int() / float()). */
#ifndef FM_CLI_XYZ_AXIS_H
#define FM_CLI_XYZ_AXIS_H

#include <stddef.h>

typedef enum { XA_INT, XA_FLOAT, XA_STR } xa_type;

/* At most this many values per axis (a range past it is refused). */
#define XA_MAX_VALUES 10000

typedef struct xa_values {
    int n;
    double *num; /* XA_INT (exact integers) and XA_FLOAT */
    char **str;  /* XA_STR */
} xa_values;

/* Returns 0, or -1 with why (one line): a field that is not a number of the
 * type (A1111's ValueError), a zero step, a non-finite number (A1111 takes
 * inf and nan; fmimage refuses them), more than XA_MAX_VALUES values. */
int xa_parse(xa_type type, const char *text, xa_values *out, char *why, size_t why_len);
void xa_free(xa_values *v);

#endif
