/*
 * Helpers shared by the unit tests.  Each test program includes this
 * once, after cmocka.h and sidecar.h.
 */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <openssl/pem.h>
#include <openssl/x509.h>

/* A self-signed PEM certificate for key, named cn, valid from nb to na. */
static char *
tu_self_signed(EVP_PKEY *key, time_t nb, time_t na, const char *cn)
{
	X509		*x;
	X509_NAME	*name;
	BIO		*bio;
	char		*data, *pem;
	long		 len;

	assert_non_null(x = X509_new());
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), nb));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), na));
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, key);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	assert_non_null(bio = BIO_new(BIO_s_mem()));
	assert_true(PEM_write_bio_X509(bio, x));
	len = BIO_get_mem_data(bio, &data);
	pem = xstrndup(data, (size_t)len);
	BIO_free(bio);
	X509_free(x);
	return pem;
}

#endif /* TEST_UTIL_H */
