// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* placeholder: being written */
#include <errno.h>
#include <stdio.h>
#include "commands.h"

int fl_cmd_source(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "faultline source: not built yet\n");
	return -ENOSYS;
}
