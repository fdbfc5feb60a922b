/* json.c - see json.h */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), or 0 when it is not one */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

/* s with each byte that is not part of valid UTF-8 replaced by U+FFFD;
 * NULL when s is valid (use it as it is) or out of memory (*oom set) */
static char *utf8_fix(const char *s, int *oom)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t bad = 0, len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i);
        if (n) i += n;
        else {
            bad++;
            i++;
        }
    }
    *oom = 0;
    if (!bad) return NULL;
    char *o = malloc(len + 2 * bad + 1), *w = o;
    if (!o) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i);
        if (n) {
            memcpy(w, p + i, n);
            w += n;
            i += n;
        } else {
            memcpy(w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    *w = 0;
    return o;
}

cJSON *json_str(const char *s)
{
    if (!s) return cJSON_CreateNull();
    int oom;
    char *f = utf8_fix(s, &oom);
    if (oom) return NULL;
    cJSON *x = cJSON_CreateString(f ? f : s);
    free(f);
    return x;
}

cJSON *json_add_str(cJSON *obj, const char *key, const char *s)
{
    if (!s) return cJSON_AddNullToObject(obj, key);
    int oom;
    char *f = utf8_fix(s, &oom);
    if (oom) return NULL;
    cJSON *x = cJSON_AddStringToObject(obj, key, f ? f : s);
    if (f) {
        size_t len = strlen(s), kl = strlen(key);
        char *hex = malloc(2 * len + 1), *k = malloc(kl + 5);
        if (hex && k) {
            for (size_t i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", (unsigned char)s[i]);
            hex[2 * len] = 0;
            memcpy(k, key, kl);
            memcpy(k + kl, "_hex", 5);
            cJSON_AddStringToObject(obj, k, hex);
        }
        free(hex);
        free(k);
        free(f);
    }
    return x;
}

cJSON *json_add_hash(cJSON *obj, const char *key, const unsigned char h[32])
{
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    return cJSON_AddStringToObject(obj, key, hex);
}

int json_print(cJSON *root)
{
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) {
        fprintf(stderr, "wdelta: out of memory building JSON\n");
        return 1;
    }
    puts(s);
    cJSON_free(s);
    return 0;
}
