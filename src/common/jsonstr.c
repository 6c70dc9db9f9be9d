// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include "jsonstr.h"

void fl_json_str(FILE *out, const char *s, size_t maxlen)
{
	fputc('"', out);
	for (size_t i = 0; i < maxlen && s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}
