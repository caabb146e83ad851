/* glibc_shim.c - the two C23 entry points of glibc 2.38 that bochscpu-python
 * 0.4.0's wheel wants, for Debian 12's glibc 2.36 (loaded RTLD_GLOBAL by
 * run_x86.py before the module). C23 only adds "0b" prefixes to what
 * they parse, which Bochs' parameter and CPUID parsing never meets. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

unsigned long long __isoc23_strtoull(const char *s, char **end, int base);
int __isoc23_sscanf(const char *s, const char *fmt, ...);

unsigned long long __isoc23_strtoull(const char *s, char **end, int base)
{
    return strtoull(s, end, base);
}

int __isoc23_sscanf(const char *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsscanf(s, fmt, ap);
    va_end(ap);
    return n;
}
