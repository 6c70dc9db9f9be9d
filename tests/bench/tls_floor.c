// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The crypto floor of TLS on this machine: MiB/s of the AEAD the migration
 * connection negotiates (AES-128-GCM where the CPU has AES, else
 * ChaCha20-Poly1305), sealing then opening 16 KiB records (TLS's largest)
 * on one core, through GnuTLS.  bench_migration.py turns it into the best
 * TLS/plaintext push ratio this machine allows.  Prints one JSON line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
	enum { REC = 16384, ROUNDS = 4096 };
	gnutls_cipher_algorithm_t alg = GNUTLS_CIPHER_AES_128_GCM;
	unsigned char key[32] = { 1 }, iv[12] = { 0 };
	unsigned char *pt = calloc(1, REC), *ct = calloc(1, REC + 16);
	gnutls_aead_cipher_hd_t h;
	gnutls_datum_t k;
	double t0, seal, open;
	size_t n;

#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("aes"))
		alg = GNUTLS_CIPHER_CHACHA20_POLY1305;
#endif
	k = (gnutls_datum_t){ key, (unsigned)gnutls_cipher_get_key_size(alg) };
	if (!pt || !ct || gnutls_aead_cipher_init(&h, alg, &k) < 0)
		return 1;
	t0 = now_s();
	for (int i = 0; i < ROUNDS; i++) {
		n = REC + 16;
		gnutls_aead_cipher_encrypt(h, iv, sizeof(iv), NULL, 0, 16, pt, REC, ct, &n);
	}
	seal = now_s() - t0;
	t0 = now_s();
	for (int i = 0; i < ROUNDS; i++) {
		n = REC;
		gnutls_aead_cipher_decrypt(h, iv, sizeof(iv), NULL, 0, 16, ct, REC + 16, pt, &n);
	}
	open = now_s() - t0;
	printf("{\"cipher\":\"%s\",\"seal_mib_s\":%.1f,\"open_mib_s\":%.1f}\n", gnutls_cipher_get_name(alg),
	       (double)REC * ROUNDS / (1 << 20) / seal, (double)REC * ROUNDS / (1 << 20) / open);
	gnutls_aead_cipher_deinit(h);
	return 0;
}
