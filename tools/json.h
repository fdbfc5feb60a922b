/* json.h - the wdelta tool's one JSON writer (over cJSON).
 *
 * Every string a command puts in its JSON goes through json_add_str or
 * json_str: names come from the file system and from delta manifests, where
 * any byte may appear, and cJSON copies bytes that are not UTF-8 as they are,
 * which is not valid JSON.  Here such bytes become U+FFFD, and json_add_str
 * adds KEY_hex with the exact bytes (hex) so that nothing is lost. */
#ifndef WDELTA_TOOL_JSON_H
#define WDELTA_TOOL_JSON_H

#include <cjson/cJSON.h>

/* obj[key] = s (NULL: JSON null); s not UTF-8: also obj[key "_hex"] */
cJSON *json_add_str(cJSON *obj, const char *key, const char *s);
/* a string item for an array (not UTF-8 bytes become U+FFFD) */
cJSON *json_str(const char *s);
/* 32-byte hash as 64 hex digits */
cJSON *json_add_hash(cJSON *obj, const char *key, const unsigned char h[32]);
/* Print root on one line to stdout, then free it.  0, or 1 when out of
 * memory (the message on stderr). */
int json_print(cJSON *root);

#endif
