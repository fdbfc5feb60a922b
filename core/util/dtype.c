/* dtype.c - safetensors dtypes, and which names are safe to serve. */
#include "util/util.h"
#include <string.h>

static const struct {
    const char *name;
    wd_dtype t;
    unsigned size;
} dtypes[] = {
    {"F64", WD_F64, 8},   {"F32", WD_F32, 4},   {"F16", WD_F16, 2},          {"BF16", WD_BF16, 2},
    {"I64", WD_I64, 8},   {"I32", WD_I32, 4},   {"I16", WD_I16, 2},          {"I8", WD_I8, 1},
    {"U64", WD_U64, 8},   {"U32", WD_U32, 4},   {"U16", WD_U16, 2},          {"U8", WD_U8, 1},
    {"BOOL", WD_BOOL, 1}, {"F8_E4M3", WD_F8_E4M3, 1}, {"F8_E5M2", WD_F8_E5M2, 1},
};

wd_dtype wd_dtype_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (!strcmp(name, dtypes[i].name)) return dtypes[i].t;
    return WD_OPAQUE;
}

unsigned wd_dtype_size(wd_dtype t)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (dtypes[i].t == t) return dtypes[i].size;
    return 0;
}

int wd_dtype_is_float(wd_dtype t)
{
    return t == WD_F64 || t == WD_F32 || t == WD_F16 || t == WD_BF16;
}

/* Length of the UTF-8 sequence at p (n bytes left), 0 if invalid: no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned min, cp;
    if ((c & 0xe0) == 0xc0) len = 2, min = 0x80, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) len = 3, min = 0x800, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) len = 4, min = 0x10000, cp = c & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

int wd_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

int wd_safe_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 255 || !strcmp(name, ".") || !strcmp(name, "..")) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c < 0x20 || c == 0x7f) return 0;
    }
    return wd_utf8_valid(name, n);
}
