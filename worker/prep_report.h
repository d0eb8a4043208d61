/* prep_report: what gyro-prep's filters dropped from a channel and why, as JSON (jansson): the
 * report file DIR/CHANNEL/prep_report.json and the "filtered" member of the summary line.
 *
 * Per rule (prep_filter.h's names): documents and bytes dropped, and the first few examples in
 * the channel's order, each with its source file, its document index in that file (fortunes:
 * the entry; other files: 0), a reason and a safe preview (the text, cut at a character
 * boundary, when it is valid UTF-8 without control characters; else "preview_hex"). Files
 * skipped whole (binary, unparseable HTML) count under "nontext" with document index -1.
 * Boilerplate lines are counted apart (lines, bytes, documents touched) with the first few
 * distinct lines and the number of documents of their group that hold them. */
#ifndef GY_PREP_REPORT_H
#define GY_PREP_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "worker/prep_filter.h"

typedef struct gy_prep_report gy_prep_report_t;

/* A report for channel keeping up to max_examples examples per rule; NULL when out of memory.
 * opts (copied) are written into the report. */
gy_prep_report_t *gy_prep_report_create(const char *channel, size_t max_examples,
                                        const gy_prep_filter_opts_t *opts);
void gy_prep_report_destroy(gy_prep_report_t *r);

/* A document that was judged: kept (v->rule == GY_PREP_KEEP) or dropped. text is the document
 * as judged (after its boilerplate lines went); dup_file and dup_doc name the earlier document
 * of a duplicate (NULL otherwise). Returns 0 or GY_ENOMEM. */
int gy_prep_report_doc(gy_prep_report_t *r, const char *file, int64_t doc, const char *text,
                       size_t n, const gy_prep_verdict_t *v, const char *dup_file, int64_t dup_doc);

/* A whole file skipped before its documents were judged; why is a short reason, raw its first
 * bytes for the preview. Returns 0 or GY_ENOMEM. */
int gy_prep_report_file(gy_prep_report_t *r, const char *file, const char *why, const char *raw,
                        size_t n);

/* A boilerplate line removed from document doc of file (docs: the documents of its group that
 * hold it). Returns 0 or GY_ENOMEM. */
int gy_prep_report_line(gy_prep_report_t *r, const char *file, int64_t doc, const char *line,
                        size_t n, uint32_t docs);

/* The end of one document's boilerplate removal: touched says whether it lost a line. */
void gy_prep_report_line_doc(gy_prep_report_t *r, int touched);

/* Documents dropped in all (every rule but boilerplate). */
uint64_t gy_prep_report_dropped(const gy_prep_report_t *r);

/* A new object for the summary line: {"documents_dropped":N, RULE: documents, ...,
 * "boilerplate_lines": N}; NULL when out of memory. */
json_t *gy_prep_report_summary(const gy_prep_report_t *r);

/* The whole report as a new JSON object; NULL when out of memory. */
json_t *gy_prep_report_json(const gy_prep_report_t *r);

#endif
