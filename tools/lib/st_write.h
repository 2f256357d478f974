/* st_write: the tools' and tests' names for the safetensors writer, which
 * lives in the library now (weights/st_write.h; fmimage convert uses it). */
#ifndef FM_ST_WRITE_H
#define FM_ST_WRITE_H

#include "weights/st_write.h"

typedef wt_st_entry tl_st_entry;
typedef wt_st_writer tl_st_writer;
#define tl_st_writer_begin wt_st_writer_begin
#define tl_st_writer_put wt_st_writer_put
#define tl_st_writer_put_part wt_st_writer_put_part
#define tl_st_writer_finish wt_st_writer_finish
#define tl_st_writer_abort wt_st_writer_abort
#define tl_st_write wt_st_write

#endif
