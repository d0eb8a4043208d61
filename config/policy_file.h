/* policy_file: reading a repair policy from YAML (see config/policy_file.c). */
#ifndef GY_CONFIG_POLICY_FILE_H
#define GY_CONFIG_POLICY_FILE_H

#include <stddef.h>

#include "policies/policy.h"

/* Loads a policy file. Keys absent from the file keep the built-in default (a `ladder`, when
 * given, replaces the default ladder as a whole). Unknown keys, wrong types and out-of-range
 * values are GY_ECONFIG with "FILE:LINE: key 'a.b': problem" in errmsg; on any error *p is left
 * unchanged (so a refused `policy set` keeps the old policy). */
int gy_policy_load(gy_policy_t *p, const char *path, char *errmsg, size_t errlen);
/* The same from len bytes of YAML text in memory (a `policy set` request); messages name the
 * text `name` as if it were a file ("NAME:LINE: key 'a.b': problem"). */
int gy_policy_parse(gy_policy_t *p, const char *name, const char *text, size_t len, char *errmsg,
                    size_t errlen);

#endif
