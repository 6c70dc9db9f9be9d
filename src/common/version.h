/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* faultline's version: the binary's --version, the exporter's build_info,
 * the man pages, libfaultline's pkg-config file (the Makefile reads it here). */
#ifndef FAULTLINE_VERSION_H
#define FAULTLINE_VERSION_H

#ifndef FL_VERSION
#define FL_VERSION "0.1.0"
#endif

#endif
