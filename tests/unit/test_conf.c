/*
 * conf.c: the configuration a user writes, as the daemon sees it, and the
 * exact "FILE:LINE: message" a mistake produces.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar.h"
#include "conf_int.h"

/* Every test gets its own folder. */
struct conf_test {
	char	 dir[64];
};

static int
conf_test_setup(void **state)
{
	struct conf_test	*t;

	t = xcalloc(1, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_conf.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	*state = t;
	return 0;
}

static int
conf_test_rm(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
conf_test_teardown(void **state)
{
	struct conf_test	*t = *state;

	nftw(t->dir, conf_test_rm, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

/* Write name (relative to the test folder) and return its full path. */
static char *
conf_test_write(struct conf_test *t, const char *name, const char *text)
{
	char	*path;
	FILE	*f;

	xasprintf(&path, "%s/%s", t->dir, name);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	return path;
}

static struct conf *
conf_test_ok(struct conf_test *t, const char *text)
{
	struct conf	*conf;
	char		*path, *cause = NULL;

	path = conf_test_write(t, "sidecar.conf", text);
	conf = conf_load(path, &cause);
	if (conf == NULL)
		fail_msg("unexpected error: %s", cause);
	assert_null(cause);
	assert_string_equal(conf->c_file, path);
	free(path);
	return conf;
}

/*
 * Load text as sidecar.conf and check the error; "%s" in want stands for
 * the test folder.
 */
static void PRINTFLIKE(3, 4)
conf_test_err(struct conf_test *t, const char *text, const char *want, ...)
{
	struct conf	*conf;
	va_list		 ap;
	char		*path, *cause = NULL, *expect;

	va_start(ap, want);
	if (vasprintf(&expect, want, ap) == -1)
		fail();
	va_end(ap);

	path = conf_test_write(t, "sidecar.conf", text);
	conf = conf_load(path, &cause);
	assert_null(conf);
	assert_non_null(cause);
	assert_string_equal(cause, expect);
	free(cause);
	free(expect);
	free(path);
}

#define ISSUER "acme_issuer le {\n    uri https://acme.test/dir;\n}\n"

static void
test_conf_full(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	struct conf_cert	*cc;
	char			*path, *expect;

	/* Spaces and a newline around the key. */
	path = conf_test_write(t, "eab2.key", "  aGVsbG8td29ybGQ \n");
	free(path);
	free(conf_test_write(t, "nginx.conf", "# no acme_* here\n"));
	conf = conf_test_ok(t,
	    "# acme-sidecar configuration\n"
	    "acme_issuer letsencrypt {\n"
	    "    uri         https://acme.test/directory;\n"
	    "    contact     admin@example.test;\n"
	    "    contact     mailto:ops@example.test;\n"
	    "    state_path  /var/cache/acme/le;   # comment\n"
	    "    accept_terms_of_service;\n"
	    "    ssl_trusted_certificate ca.pem;\n"
	    "    ssl_verify  off;\n"
	    "    account_key rsa:3072;\n"
	    "    external_account_key kid-1 \"data:aGVsbG8td29ybGQ\";\n"
	    "    preferred_chain \"ISRG Root X1\";\n"
	    "    profile     shortlived require;\n"
	    "    challenge   http-01;\n"
	    "    request_rate 600r/m burst=7;\n"
	    "}\n"
	    "acme_issuer 'second' {\n"
	    "    uri http://127.0.0.1:14000/dir;\n"
	    "    account_key /etc/acme/account.pem;\n"
	    "    external_account_key kid2 eab2.key;\n"
	    "    request_rate off;\n"
	    "}\n"
	    "acme_shared_zone zone=acme_zone:1M;\n"
	    "acme_certificate letsencrypt a.example.test B.Example.TEST. "
	    "a.example.test;\n"
	    "acme_certificate second a.example.test key=rsa:2048;\n"
	    "acme_certificate second 192.0.2.1 [2001:DB8::0:1];\n"
	    "challenge_listen 127.0.0.1:8080;\n"
	    "control_socket /run/test/control.sock;\n"
	    "user nobody nogroup;\n"
	    "nginx_config nginx.conf;\n");

	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_non_null(ci);
	assert_string_equal(ci->ci_name, "letsencrypt");
	assert_string_equal(ci->ci_uri, "https://acme.test/directory");
	assert_int_equal(ci->ci_ncontact, 2);
	assert_string_equal(ci->ci_contact[0], "mailto:admin@example.test");
	assert_string_equal(ci->ci_contact[1], "mailto:ops@example.test");
	assert_string_equal(ci->ci_state_path, "/var/cache/acme/le");
	assert_int_equal(ci->ci_accept_tos, 1);
	/* Relative paths resolve beside the config file. */
	xasprintf(&expect, "%s/ca.pem", t->dir);
	assert_string_equal(ci->ci_trusted_cert, expect);
	free(expect);
	assert_int_equal(ci->ci_ssl_verify, 0);
	assert_null(ci->ci_account_key_file);
	assert_int_equal(ci->ci_account_key_type, KEY_RSA_3072);
	assert_string_equal(ci->ci_eab_kid, "kid-1");
	assert_int_equal(ci->ci_eab_hmac_len, 11);
	assert_memory_equal(ci->ci_eab_hmac, "hello-world", 11);
	assert_string_equal(ci->ci_preferred_chain, "ISRG Root X1");
	assert_string_equal(ci->ci_profile, "shortlived");
	assert_int_equal(ci->ci_profile_require, 1);
	assert_int_equal(ci->ci_challenge, CHALLENGE_HTTP_01);
	assert_true(ci->ci_rate > 9.99 && ci->ci_rate < 10.01);
	assert_int_equal(ci->ci_burst, 7);
	assert_string_equal(ci->ci_file, conf->c_file);
	assert_int_equal(ci->ci_line, 2);

	ci = TAILQ_NEXT(ci, ci_entry);
	assert_non_null(ci);
	assert_ptr_equal(conf_find_issuer(conf, "second"), ci);
	assert_null(conf_find_issuer(conf, "third"));
	assert_string_equal(ci->ci_uri, "http://127.0.0.1:14000/dir");
	assert_int_equal(ci->ci_ncontact, 0);
	assert_string_equal(ci->ci_state_path, "/var/lib/acme-sidecar/second");
	assert_int_equal(ci->ci_accept_tos, 0);
	assert_null(ci->ci_trusted_cert);
	assert_int_equal(ci->ci_ssl_verify, 1);
	assert_string_equal(ci->ci_account_key_file, "/etc/acme/account.pem");
	assert_string_equal(ci->ci_eab_kid, "kid2");
	assert_int_equal(ci->ci_eab_hmac_len, 11);
	assert_memory_equal(ci->ci_eab_hmac, "hello-world", 11);
	assert_null(ci->ci_preferred_chain);
	assert_null(ci->ci_profile);
	assert_true(ci->ci_rate == 0);
	assert_int_equal(ci->ci_line, 17);
	assert_null(TAILQ_NEXT(ci, ci_entry));

	assert_string_equal(conf->c_zone_name, "acme_zone");
	assert_int_equal(conf->c_zone_size, 1024 * 1024);

	cc = TAILQ_FIRST(&conf->c_certs);
	assert_non_null(cc);
	assert_string_equal(cc->cc_id, "a.example.test");
	assert_string_equal(cc->cc_issuer, "letsencrypt");
	assert_int_equal(cc->cc_nidents, 2);
	assert_string_equal(cc->cc_idents[0], "a.example.test");
	assert_string_equal(cc->cc_idents[1], "b.example.test");
	assert_int_equal(cc->cc_key, KEY_ECDSA_256);
	assert_int_equal(cc->cc_line, 24);

	cc = TAILQ_NEXT(cc, cc_entry);
	assert_non_null(cc);
	assert_string_equal(cc->cc_id, "a.example.test_rsa2048");
	assert_int_equal(cc->cc_key, KEY_RSA_2048);
	assert_int_equal(cc->cc_line, 25);

	cc = TAILQ_NEXT(cc, cc_entry);
	assert_non_null(cc);
	assert_string_equal(cc->cc_id, "192.0.2.1");
	assert_int_equal(cc->cc_nidents, 2);
	assert_string_equal(cc->cc_idents[1], "2001:db8::1");
	assert_true(conf_ident_is_ip(cc->cc_idents[0]));
	assert_true(conf_ident_is_ip(cc->cc_idents[1]));
	assert_null(TAILQ_NEXT(cc, cc_entry));

	assert_string_equal(conf->c_challenge_addr, "127.0.0.1");
	assert_int_equal(conf->c_challenge_port, 8080);
	assert_string_equal(conf->c_control_socket, "/run/test/control.sock");
	assert_string_equal(conf->c_user, "nobody");
	assert_string_equal(conf->c_group, "nogroup");
	xasprintf(&expect, "%s/nginx.conf", t->dir);
	assert_string_equal(conf->c_nginx_config, expect);
	free(expect);
	/* No "user": nginx's built-in default, nobody:nogroup on Debian. */
	assert_string_equal(conf->c_nginx_user, "nobody");
	assert_string_equal(conf->c_nginx_group, "nogroup");
	conf_free(conf);
}

static void
test_conf_defaults(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;

	conf = conf_test_ok(t, "\n# nothing but a comment\n");
	assert_true(TAILQ_EMPTY(&conf->c_issuers));
	assert_true(TAILQ_EMPTY(&conf->c_certs));
	assert_string_equal(conf->c_challenge_addr, "0.0.0.0");
	assert_int_equal(conf->c_challenge_port, 80);
	assert_string_equal(conf->c_control_socket,
	    "/run/acme-sidecar/control.sock");
	assert_null(conf->c_user);
	assert_null(conf->c_group);
	assert_null(conf->c_nginx_config);
	assert_string_equal(conf->c_zone_name, "ngx_acme_shared");
	assert_int_equal(conf->c_zone_size, 256 * 1024);
	assert_string_equal(conf->c_zone_path, "/dev/shm/ngx_acme_shared");
	assert_null(conf->c_zone_group);
	assert_null(conf->c_nginx_group);
	conf_free(conf);

	conf = conf_test_ok(t, "");
	conf_free(conf);

	conf = conf_test_ok(t, "acme_issuer le {\n uri https://acme.test/dir;\n"
	    " contact postmaster;\n contact tel:+1-555;\n}\nuser nobody;");
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_string_equal(ci->ci_state_path, "/var/lib/acme-sidecar/le");
	assert_int_equal(ci->ci_ssl_verify, 1);
	assert_int_equal(ci->ci_accept_tos, 0);
	assert_int_equal(ci->ci_ncontact, 2);
	assert_string_equal(ci->ci_contact[0], "mailto:postmaster");
	assert_string_equal(ci->ci_contact[1], "tel:+1-555");
	assert_int_equal(ci->ci_account_key_type, KEY_ECDSA_256);
	assert_null(ci->ci_account_key_file);
	assert_null(ci->ci_eab_kid);
	assert_null(ci->ci_eab_hmac);
	assert_int_equal(ci->ci_challenge, CHALLENGE_HTTP_01);
	assert_true(ci->ci_rate == CONF_RATE_DEFAULT);
	assert_int_equal(ci->ci_burst, CONF_BURST_DEFAULT);
	assert_string_equal(conf->c_user, "nobody");
	assert_null(conf->c_group);
	conf_free(conf);
}

/* Quotes, escapes, comments and odd spacing, as nginx reads them. */
static void
test_conf_lexer(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;

	conf = conf_test_ok(t,
	    "acme_issuer\tle{uri 'https://acme.test/a b';"
	    "contact \"x\\\"y@example.test\";contact 'a\\'b@x.test';\n"
	    "contact a#b@x.test;# comment; not a directive }\n"
	    "contact \"multi\nline\";\r\n"
	    "contact c\\\\d@x.test;}");
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_string_equal(ci->ci_uri, "https://acme.test/a b");
	assert_int_equal(ci->ci_ncontact, 5);
	assert_string_equal(ci->ci_contact[0], "mailto:x\"y@example.test");
	assert_string_equal(ci->ci_contact[1], "mailto:a'b@x.test");
	assert_string_equal(ci->ci_contact[2], "mailto:a#b@x.test");
	assert_string_equal(ci->ci_contact[3], "mailto:multi\nline");
	assert_string_equal(ci->ci_contact[4], "mailto:c\\d@x.test");
	conf_free(conf);

	/* Lines inside a quoted string still count. */
	conf_test_err(t, "control_socket \"/a\nb\";\nbogus;\n",
	    "%s/sidecar.conf:3: unknown directive \"bogus\"", t->dir);
}

static void
test_conf_unknown_directive(void **state)
{
	conf_test_err(*state, ISSUER "\n  listen 80;\n",
	    "%s/sidecar.conf:5: unknown directive \"listen\"",
	    ((struct conf_test *)*state)->dir);
}

static void
test_conf_missing_semicolon(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/dir\n}\n",
	    "%s/sidecar.conf:3: unexpected \"}\"", t->dir);
	conf_test_err(t, ISSUER "control_socket /x\n\n",
	    "%s/sidecar.conf:4: unexpected end of file, expecting \";\" or "
	    "\"}\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/dir;\n",
	    "%s/sidecar.conf:2: unexpected end of file, expecting \"}\"",
	    t->dir);
	conf_test_err(t, ISSUER "}\n",
	    "%s/sidecar.conf:4: unexpected \"}\"", t->dir);
	conf_test_err(t, ISSUER "\n;\n",
	    "%s/sidecar.conf:5: unexpected \";\"", t->dir);
	conf_test_err(t, "{ }",
	    "%s/sidecar.conf:1: unexpected \"{\"", t->dir);
	conf_test_err(t, "user \"a\"b;",
	    "%s/sidecar.conf:1: unexpected \"b\"", t->dir);
	/* Swallows the next line: the count of arguments gives it away. */
	conf_test_err(t, "control_socket /x\nuser root;\n",
	    "%s/sidecar.conf:1: invalid number of arguments in "
	    "\"control_socket\" directive", t->dir);
}

static void
test_conf_blocks_and_arguments(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, "acme_issuer le;\n",
	    "%s/sidecar.conf:1: directive \"acme_issuer\" has no opening "
	    "\"{\"", t->dir);
	conf_test_err(t, "user root { }\n",
	    "%s/sidecar.conf:1: directive \"user\" is not terminated by "
	    "\";\"", t->dir);
	conf_test_err(t, "\nuri https://acme.test/;\n",
	    "%s/sidecar.conf:2: \"uri\" directive is not allowed here",
	    t->dir);
	conf_test_err(t, "acme_issuer a {\n uri https://a.test/;\n"
	    " acme_issuer b { }\n}\n",
	    "%s/sidecar.conf:3: \"acme_issuer\" directive is not allowed "
	    "here", t->dir);
	conf_test_err(t, "user nosuchuser-acme;\n",
	    "%s/sidecar.conf:1: unknown user \"nosuchuser-acme\" in \"user\" "
	    "directive", t->dir);
	conf_test_err(t, "\nuser nobody nosuchgroup-acme;\n",
	    "%s/sidecar.conf:2: unknown group \"nosuchgroup-acme\" in "
	    "\"user\" directive", t->dir);
	conf_test_err(t, "user a b c;\n",
	    "%s/sidecar.conf:1: invalid number of arguments in \"user\" "
	    "directive", t->dir);
	conf_test_err(t, "acme_issuer le {\n accept_terms_of_service yes;\n}",
	    "%s/sidecar.conf:2: invalid number of arguments in "
	    "\"accept_terms_of_service\" directive", t->dir);
	conf_test_err(t, "acme_certificate;\n",
	    "%s/sidecar.conf:1: invalid number of arguments in "
	    "\"acme_certificate\" directive", t->dir);
	conf_test_err(t, "acme_issuer le {\n}\n",
	    "%s/sidecar.conf:1: no \"uri\" is defined for acme_issuer \"le\"",
	    t->dir);
	conf_test_err(t, "acme_issuer le {\n uri ftp://acme.test/;\n}\n",
	    "%s/sidecar.conf:2: invalid uri \"ftp://acme.test/\", it must "
	    "start with \"https://\" or \"http://\"", t->dir);
	conf_test_err(t, "acme_issuer ../x {\n uri https://a.test/;\n}\n",
	    "%s/sidecar.conf:1: invalid issuer name \"../x\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " ssl_verify maybe;\n}\n",
	    "%s/sidecar.conf:3: invalid value \"maybe\" in \"ssl_verify\" "
	    "directive, it must be \"on\" or \"off\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " profile classic maybe;\n}\n",
	    "%s/sidecar.conf:3: invalid parameter \"maybe\"", t->dir);
}

static void
test_conf_duplicate_directive(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " contact a@x.test;\n contact b@x.test;\n"
	    " uri https://b.test/;\n}\n",
	    "%s/sidecar.conf:5: \"uri\" directive is duplicate", t->dir);
	conf_test_err(t, "control_socket /a;\ncontrol_socket /b;\n",
	    "%s/sidecar.conf:2: \"control_socket\" directive is duplicate",
	    t->dir);
	/* The same directive in two issuers is fine. */
	conf_free(conf_test_ok(t, "acme_issuer a {\n uri https://a.test/;\n}\n"
	    "acme_issuer b {\n uri https://a.test/;\n}\n"));
}

static void
test_conf_bad_key_type(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, ISSUER "acme_certificate le a.test key=rsa:1024;\n",
	    "%s/sidecar.conf:4: invalid key type \"rsa:1024\"", t->dir);
	conf_test_err(t, ISSUER "acme_certificate le a.test key=rsa:2048 "
	    "key=rsa:4096;\n",
	    "%s/sidecar.conf:4: duplicate \"key\" parameter", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " account_key ecdsa:255;\n}\n",
	    "%s/sidecar.conf:3: invalid key type \"ecdsa:255\"", t->dir);
}

static void
test_conf_key_types(void **state)
{
	static const struct {
		const char	*name;
		const char	*suffix;
		enum key_type	 type;
	} k[] = {
		{ "ecdsa:256", "ecdsa256", KEY_ECDSA_256 },
		{ "ecdsa:384", "ecdsa384", KEY_ECDSA_384 },
		{ "ecdsa:521", "ecdsa521", KEY_ECDSA_521 },
		{ "rsa:2048", "rsa2048", KEY_RSA_2048 },
		{ "rsa:3072", "rsa3072", KEY_RSA_3072 },
		{ "rsa:4096", "rsa4096", KEY_RSA_4096 },
	};
	enum key_type	 type;
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		assert_string_equal(key_type_name(k[i].type), k[i].name);
		assert_string_equal(key_type_suffix(k[i].type), k[i].suffix);
		assert_int_equal(key_type_parse(k[i].name, &type), 0);
		assert_int_equal(type, k[i].type);
	}
	assert_int_equal(key_type_parse("RSA:2048", &type), -1);
	assert_int_equal(key_type_parse("ecdsa256", &type), -1);
	assert_int_equal(key_type_parse("", &type), -1);
	/* nginx-acme's sizeless names: its default sizes. */
	assert_int_equal(key_type_parse("rsa", &type), 0);
	assert_int_equal(type, KEY_RSA_2048);
	assert_int_equal(key_type_parse("ecdsa", &type), 0);
	assert_int_equal(type, KEY_ECDSA_256);
}

/*
 * key=rsa and key=ecdsa name the same certificates as rsa:2048 and
 * ecdsa:256, in the file, in the API (conf_runtime_add()) and as
 * account_key; certificates.conf keeps the sized name.
 */
static void
test_conf_sizeless_key_types(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;
	char			*idents[] = { "c.test" }, *cause = NULL, *text;

	conf = conf_test_ok(t, "acme_issuer le {\n    uri https://acme.test/d;"
	    "\n    account_key rsa;\n    state_path st;\n}\n"
	    "acme_certificate le a.test key=rsa;\n"
	    "acme_certificate le b.test key=ecdsa;\n");
	assert_int_equal(TAILQ_FIRST(&conf->c_issuers)->ci_account_key_type,
	    KEY_RSA_2048);
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.test_rsa2048");
	assert_int_equal(cc->cc_key, KEY_RSA_2048);
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_string_equal(cc->cc_id, "b.test");
	assert_int_equal(cc->cc_key, KEY_ECDSA_256);
	assert_int_equal(conf_runtime_add(conf, "le", idents, 1, "rsa", NULL,
	    NULL, &cause), CONF_ADD_OK);
	assert_string_equal(TAILQ_LAST(&conf->c_certs, conf_certs)->cc_id,
	    "c.test_rsa2048");
	text = conf_runtime_text(conf, TAILQ_FIRST(&conf->c_issuers));
	assert_non_null(strstr(text, "acme_certificate le c.test "
	    "key=rsa:2048;\n"));
	free(text);
	/* The same certificate under its other name is a duplicate. */
	idents[0] = "a.test";
	assert_int_equal(conf_runtime_add(conf, "le", idents, 1, "rsa:2048",
	    NULL, NULL, &cause), CONF_ADD_DUPLICATE);
	free(cause);
	conf_free(conf);
	conf_test_err(t, ISSUER "acme_certificate le a.test key=rsa:;\n",
	    "%s/sidecar.conf:4: invalid key type \"rsa:\"", t->dir);
}

static void
test_conf_unknown_issuer(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;

	conf_test_err(t, ISSUER "acme_certificate le a.test;\n\n"
	    "acme_certificate nope b.test;\n" "acme_certificate le c.test;\n",
	    "%s/sidecar.conf:6: unknown acme_issuer \"nope\"", t->dir);
	/* Defined after the certificate that uses it. */
	conf = conf_test_ok(t, "acme_certificate le a.test;\n" ISSUER);
	assert_string_equal(TAILQ_FIRST(&conf->c_certs)->cc_issuer, "le");
	conf_free(conf);
}

static void
test_conf_duplicate_certificate(void **state)
{
	struct conf_test	*t = *state;
	FILE			*f;
	char			*text;
	size_t			 len;
	int			 i;

	conf_test_err(t, ISSUER "acme_certificate le a.test b.test;\n"
	    "acme_certificate le A.TEST. c.test;\n",
	    "%s/sidecar.conf:5: duplicate acme_certificate \"a.test\", first "
	    "defined at %s/sidecar.conf:4", t->dir, t->dir);
	conf_test_err(t, ISSUER "acme_certificate le a.test key=rsa:4096;\n"
	    "acme_certificate le a.test;\n"
	    "acme_certificate le a.test key=rsa:4096;\n",
	    "%s/sidecar.conf:6: duplicate acme_certificate \"a.test_rsa4096\", "
	    "first defined at %s/sidecar.conf:4", t->dir, t->dir);

	/* Among many (the index of ids grows), the first is still named. */
	assert_non_null(f = open_memstream(&text, &len));
	fputs(ISSUER, f);
	for (i = 0; i < 300; i++)
		fprintf(f, "acme_certificate le c%d.test;\n", i);
	fputs("acme_certificate le C123.test.;\n", f);
	assert_int_equal(fclose(f), 0);
	conf_test_err(t, text, "%s/sidecar.conf:304: duplicate "
	    "acme_certificate \"c123.test\", first defined at "
	    "%s/sidecar.conf:127", t->dir, t->dir);
	free(text);
}

static void
test_conf_duplicate_issuer(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, ISSUER "\nacme_issuer le {\n uri https://b.test/;\n}\n",
	    "%s/sidecar.conf:5: duplicate acme_issuer \"le\", first defined at "
	    "%s/sidecar.conf:1", t->dir, t->dir);
}

static void
test_conf_shared_state_path(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, "acme_issuer a {\n uri https://a.test/;\n"
	    " state_path /srv/acme;\n}\n"
	    "acme_issuer b {\n uri https://b.test/;\n"
	    " state_path /srv/acme;\n}\n",
	    "%s/sidecar.conf:7: state_path \"/srv/acme\" is already used by "
	    "acme_issuer \"a\"", t->dir);
	/* Against the other's default: reported at the issuer. */
	conf_test_err(t, "acme_issuer a {\n uri https://a.test/;\n"
	    " state_path /var/lib/acme-sidecar/b;\n}\n"
	    "acme_issuer b {\n uri https://b.test/;\n}\n",
	    "%s/sidecar.conf:5: state_path \"/var/lib/acme-sidecar/b\" is "
	    "already used by acme_issuer \"a\"", t->dir);
}

static void
test_conf_no_identifiers(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, ISSUER "acme_certificate le;\n",
	    "%s/sidecar.conf:4: no identifiers in \"acme_certificate\" "
	    "directive", t->dir);
	conf_test_err(t, ISSUER "acme_certificate le key=rsa:2048;\n",
	    "%s/sidecar.conf:4: no identifiers in \"acme_certificate\" "
	    "directive", t->dir);
}

static void
test_conf_wildcard(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, ISSUER "acme_certificate le a.test\n  *.a.test;\n",
	    "%s/sidecar.conf:4: wildcard identifier \"*.a.test\" needs "
	    "challenge dns-01: http-01 cannot validate wildcard identifiers",
	    t->dir);
	conf_test_err(t, ISSUER "acme_certificate le a.test x.*.test;\n",
	    "%s/sidecar.conf:4: invalid identifier \"x.*.test\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/dir;\n"
	    "    dns_hook /bin/true;\n}\n"
	    "acme_certificate le *.a.test challenge=http-01;\n",
	    "%s/sidecar.conf:5: wildcard identifier \"*.a.test\" needs "
	    "challenge dns-01: http-01 cannot validate wildcard identifiers",
	    t->dir);
}

#define DNS_ISSUER "acme_issuer le {\n    uri https://acme.test/dir;\n" \
	"    challenge dns-01;\n    dns_hook /usr/local/bin/hook timeout=2m;\n}\n"

/* challenge dns-01 with its hook; a wildcard's id has "_" for "*". */
static void
test_conf_dns01(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	struct conf_cert	*cc;

	conf = conf_test_ok(t, DNS_ISSUER
	    "acme_certificate le *.A.test a.test;\n"
	    "acme_certificate le b.test challenge=http-01;\n");
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_int_equal(ci->ci_challenge, CHALLENGE_DNS_01);
	assert_string_equal(ci->ci_dns_hook, "/usr/local/bin/hook");
	assert_int_equal(ci->ci_dns_hook_timeout, 120);
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "_.a.test");
	assert_string_equal(cc->cc_idents[0], "*.a.test");
	assert_int_equal(conf_cert_challenge(cc, ci), CHALLENGE_DNS_01);
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_int_equal(conf_cert_challenge(cc, ci), CHALLENGE_HTTP_01);
	conf_free(conf);

	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/dir;\n"
	    "    challenge dns-01;\n}\n",
	    "%s/sidecar.conf:1: acme_issuer \"le\" has challenge dns-01 but "
	    "no way to publish the TXT record: add \"dns_update\" or "
	    "\"dns_hook\"", t->dir);
	conf_test_err(t, ISSUER "acme_certificate le a.test challenge=dns-01;\n",
	    "%s/sidecar.conf:4: certificate \"a.test\" has challenge dns-01 "
	    "but acme_issuer \"le\" has no way to publish the TXT record: add "
	    "\"dns_update\" or \"dns_hook\" to it", t->dir);
	/* tls-alpn-01 needs no tls_alpn_listen: nginx's module answers. */
	conf = conf_test_ok(t, ISSUER "acme_certificate le a.test "
	    "challenge=tls-alpn-01;\n");
	assert_int_equal(TAILQ_FIRST(&conf->c_certs)->cc_type,
	    CHALLENGE_TLS_ALPN_01);
	conf_free(conf);
	conf_test_err(t, ISSUER "acme_certificate le a.test challenge=dns;\n"
	    "acme_certificate le b.test challenge=x challenge=dns-01;\n",
	    "%s/sidecar.conf:5: invalid challenge type \"x\": use http-01, "
	    "dns-01 or tls-alpn-01", t->dir);
	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/dir;\n"
	    "    dns_hook hook.sh;\n}\n",
	    "%s/sidecar.conf:3: dns_hook \"hook.sh\" is not an absolute path",
	    t->dir);
	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/dir;\n"
	    "    dns_hook /h timeout=0s;\n}\n",
	    "%s/sidecar.conf:3: invalid parameter \"timeout=0s\" of dns_hook: "
	    "timeout=TIME takes 1s to 60m", t->dir);
}

static void
test_conf_invalid_identifiers(void **state)
{
	static const char *bad[] = {
		"-a.test", "a-.test", "a..test", "a_b.test", ".", "..a.test",
		"1.2.3.999", "a.test..", "[1.2.3.4]", "[::1", "xn--\xc3\xa9.test",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		".test",
	};
	struct conf_test	*t = *state;
	char			*text;
	size_t			 i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xasprintf(&text, ISSUER "acme_certificate le ok.test '%s';\n",
		    bad[i]);
		conf_test_err(t, text,
		    "%s/sidecar.conf:4: invalid identifier \"%s\"", t->dir,
		    bad[i]);
		free(text);
	}
}

static void
test_conf_identifiers(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;
	char			 name[300], *text;

	/* 63-octet labels, 253 octets in all: the longest legal name. */
	memset(name, 'a', 63);
	name[63] = '.';
	memset(name + 64, 'b', 63);
	name[127] = '.';
	memset(name + 128, 'c', 63);
	name[191] = '.';
	memset(name + 192, 'd', 61);
	name[253] = '\0';
	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n}\n"
	    "acme_certificate le Xn--Bcher-Kva.Example. localhost ::1 "
	    "[::FFFF:192.0.2.1] 10.0.0.1 a-1.b2.test xn--bcher-kva.example "
	    "10.0.0.1;\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "xn--bcher-kva.example");
	assert_int_equal(cc->cc_nidents, 6);
	assert_string_equal(cc->cc_idents[0], "xn--bcher-kva.example");
	assert_string_equal(cc->cc_idents[1], "localhost");
	assert_string_equal(cc->cc_idents[2], "::1");
	assert_string_equal(cc->cc_idents[3], "::ffff:192.0.2.1");
	assert_string_equal(cc->cc_idents[4], "10.0.0.1");
	assert_string_equal(cc->cc_idents[5], "a-1.b2.test");
	assert_false(conf_ident_is_ip(cc->cc_idents[0]));
	assert_false(conf_ident_is_ip(cc->cc_idents[1]));
	assert_true(conf_ident_is_ip(cc->cc_idents[2]));
	assert_true(conf_ident_is_ip(cc->cc_idents[4]));
	conf_free(conf);

	assert_false(conf_ident_is_ip("1.2.3.4.example"));
	assert_false(conf_ident_is_ip("[::1]"));

	xasprintf(&text, ISSUER "acme_certificate le %s;\n", name);
	conf = conf_test_ok(t, text);
	assert_string_equal(TAILQ_FIRST(&conf->c_certs)->cc_id, name);
	conf_free(conf);
	free(text);
	/* One more octet is one too many. */
	xasprintf(&text, ISSUER "acme_certificate le %sd;\n", name);
	conf_test_err(t, text, "%s/sidecar.conf:4: invalid identifier \"%sd\"",
	    t->dir, name);
	free(text);
}

static void
test_conf_dot_expansion(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;

	conf = conf_test_ok(t, ISSUER
	    "acme_certificate le .Example.TEST www.example.test "
	    "api.example.test;\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "example.test");
	assert_int_equal(cc->cc_nidents, 3);
	assert_string_equal(cc->cc_idents[0], "example.test");
	assert_string_equal(cc->cc_idents[1], "www.example.test");
	assert_string_equal(cc->cc_idents[2], "api.example.test");
	conf_free(conf);

	conf_test_err(t, ISSUER "acme_certificate le .192.0.2.1;\n",
	    "%s/sidecar.conf:4: invalid identifier \".192.0.2.1\"", t->dir);
}

static void
test_conf_cert_id_suffix(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;

	conf = conf_test_ok(t, ISSUER
	    "acme_certificate le a.example.test key=rsa:2048;\n"
	    "acme_certificate le a.example.test key=ecdsa:384;\n"
	    "acme_certificate le key=ecdsa:256 a.example.test;\n"
	    "acme_certificate le key=rsa:4096 2001:db8::1;\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.example.test_rsa2048");
	assert_int_equal(cc->cc_key, KEY_RSA_2048);
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_string_equal(cc->cc_id, "a.example.test_ecdsa384");
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_string_equal(cc->cc_id, "a.example.test");
	assert_int_equal(cc->cc_key, KEY_ECDSA_256);
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_string_equal(cc->cc_id, "2001:db8::1_rsa4096");
	conf_free(conf);
}

static void
test_conf_unterminated_quote(void **state)
{
	struct conf_test	*t = *state;

	conf_test_err(t, ISSUER "\nuser \"root;\n\n# end\n",
	    "%s/sidecar.conf:5: unterminated quoted string", t->dir);
	conf_test_err(t, ISSUER "user 'root\\';\n",
	    "%s/sidecar.conf:4: unterminated quoted string", t->dir);
}

static void
test_conf_include_glob(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;
	char			*p, *cause = NULL;

	xasprintf(&p, "%s/d", t->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	free(p);
	free(conf_test_write(t, "d/10-issuer.conf", ISSUER));
	free(conf_test_write(t, "d/20-certs.conf",
	    "# certificates\n"
	    "acme_certificate le a.test;\n"
	    "acme_certificate le b.test;\n"));
	free(conf_test_write(t, "d/ignored.txt", "garbage"));

	conf = conf_test_ok(t, "include d/*.conf;\n"
	    "include d/none-*.conf;\n"
	    "acme_certificate le c.test;\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.test");
	xasprintf(&p, "%s/d/20-certs.conf", t->dir);
	assert_string_equal(cc->cc_file, p);
	free(p);
	assert_int_equal(cc->cc_line, 2);
	cc = TAILQ_NEXT(TAILQ_NEXT(cc, cc_entry), cc_entry);
	assert_string_equal(cc->cc_id, "c.test");
	assert_string_equal(cc->cc_file, conf->c_file);
	assert_int_equal(cc->cc_line, 3);
	xasprintf(&p, "%s/d/10-issuer.conf", t->dir);
	assert_string_equal(TAILQ_FIRST(&conf->c_issuers)->ci_file, p);
	free(p);
	conf_free(conf);

	/* An error in the second file names that file and its line. */
	free(conf_test_write(t, "d/20-certs.conf",
	    "# certificates\n"
	    "acme_certificate le a.test;\n"
	    "\n"
	    "acme_certificate le b.test\n"
	    "}\n"));
	conf_test_err(t, "\ninclude d/*.conf;\n",
	    "%s/d/20-certs.conf:5: unexpected \"}\"", t->dir);

	/* Unknown issuer in an included file: reported where it is. */
	free(conf_test_write(t, "d/20-certs.conf",
	    "\n\nacme_certificate other a.test;\n"));
	conf_test_err(t, "include d/*.conf;\n",
	    "%s/d/20-certs.conf:3: unknown acme_issuer \"other\"", t->dir);

	/* Inside a block, an included file adds to that block. */
	free(conf_test_write(t, "d/20-certs.conf", ""));
	free(conf_test_write(t, "inner.inc", "contact x@y.test;\n"));
	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " include inner.inc;\n}\n");
	assert_string_equal(TAILQ_FIRST(&conf->c_issuers)->ci_contact[0],
	    "mailto:x@y.test");
	conf_free(conf);

	/* A missing plain file is an error at the include. */
	conf_test_err(t, "\n\ninclude missing.conf;\n",
	    "%s/sidecar.conf:3: open() \"%s/missing.conf\" failed (No such "
	    "file or directory)", t->dir, t->dir);

	/* A missing top-level file. */
	xasprintf(&p, "%s/nope.conf", t->dir);
	assert_null(conf_load(p, &cause));
	free(p);
	assert_non_null(cause);
	assert_non_null(strstr(cause, "nope.conf\" failed (No such file"));
	free(cause);
}

static void
test_conf_include_depth(void **state)
{
	struct conf_test	*t = *state;

	/* A file that includes itself stops at the cap. */
	free(conf_test_write(t, "loop.conf", "include loop.conf;\n"));
	conf_test_err(t, "include loop.conf;\n",
	    "%s/loop.conf:1: include nesting is too deep (more than 16 "
	    "levels)", t->dir);
}

/*
 * A fan-out that no depth cap catches: 65 files that each include the
 * 65 of the next folder are 4,291 files.  The 4,097th is refused at the
 * include that asks for it: top (1), then 66 per a/ file, so in a62.conf
 * when it reaches b/02.conf.
 */
static void
test_conf_include_files(void **state)
{
	struct conf_test	*t = *state;
	char			 name[128];
	int			 i;

	snprintf(name, sizeof(name), "%s/a", t->dir);
	assert_int_equal(mkdir(name, 0700), 0);
	snprintf(name, sizeof(name), "%s/b", t->dir);
	assert_int_equal(mkdir(name, 0700), 0);
	for (i = 0; i < 65; i++) {
		snprintf(name, sizeof(name), "a/%02d.conf", i);
		free(conf_test_write(t, name, "include ../b/*.conf;\n"));
		snprintf(name, sizeof(name), "b/%02d.conf", i);
		free(conf_test_write(t, name, "# leaf\n"));
	}
	conf_test_err(t, "include a/*.conf;\n",
	    "%s/a/62.conf:1: too many files included (more than 4096)",
	    t->dir);
	/* Fewer pass. */
	for (i = 62; i < 65; i++) {
		snprintf(name, sizeof(name), "%s/a/%02d.conf", t->dir, i);
		assert_int_equal(unlink(name), 0);
	}
	conf_free(conf_test_ok(t, "include a/*.conf;\n"));
}

/* The bytes of one load are capped, at the include that goes over. */
static void
test_conf_include_total(void **state)
{
	struct conf_test	*t = *state;
	char			*big, *top;
	size_t			 n = 1000 * 1000, i;

	big = xmalloc(n + 1);
	memset(big, '#', n);
	for (i = 999; i < n; i += 1000)
		big[i] = '\n';
	big[n] = '\0';
	free(conf_test_write(t, "big.conf", big));
	free(big);
	top = xstrdup("");
	for (i = 0; i < 16; i++) {
		big = top;
		xasprintf(&top, "%sinclude big.conf;\n", big);
		free(big);
	}
	conf_free(conf_test_ok(t, top));	/* 16,000,288 bytes */
	big = top;
	xasprintf(&top, "%sinclude big.conf;\n", big);
	free(big);
	conf_test_err(t, top, "%s/sidecar.conf:17: included files are too "
	    "large (more than 16777216 bytes in all)", t->dir);
	free(top);
}

static void
test_conf_limits(void **state)
{
	struct conf_test	*t = *state;
	char			*text, *p, *cause = NULL;
	size_t			 n = 1024 * 1024 + 1;
	FILE			*f;

	text = xmalloc(n + 1);
	memset(text, ' ', n);
	text[n] = '\0';
	/* No line: the top-level file could not be read at all. */
	conf_test_err(t, text, "file \"%s/sidecar.conf\" is too large (more "
	    "than 1048576 bytes)", t->dir);
	free(text);

	text = xmalloc(5000 + 20);
	memcpy(text, "\nuser ", 6);
	memset(text + 6, 'u', 5000);
	memcpy(text + 5006, ";\n", 3);
	conf_test_err(t, text, "%s/sidecar.conf:2: too long parameter "
	    "\"uuuuuuuuuuuuuuuu...\" started", t->dir);
	free(text);

	/* A NUL byte cannot be part of a word. */
	xasprintf(&p, "%s/sidecar.conf", t->dir);
	assert_non_null(f = fopen(p, "w"));
	assert_int_equal(fwrite("\nuser a\0b;\n", 1, 12, f), 12);
	assert_int_equal(fclose(f), 0);
	assert_null(conf_load(p, &cause));
	free(p);
	xasprintf(&p, "%s/sidecar.conf:2: unexpected NUL byte", t->dir);
	assert_string_equal(cause, p);
	free(cause);
	free(p);
}

static void
test_conf_request_rate(void **state)
{
	static const struct {
		const char	*arg;
		double		 rate;
		unsigned int	 burst;
	} ok[] = {
		{ "20r/s", 20.0, CONF_BURST_DEFAULT },
		{ "600r/m", 10.0, CONF_BURST_DEFAULT },
		{ "1r/m burst=1", 1.0 / 60.0, 1 },
		{ "250r/s burst=500", 250.0, 500 },
		{ "off", 0.0, CONF_BURST_DEFAULT },
	};
	static const struct {
		const char	*arg;
		const char	*msg;
	} bad[] = {
		{ "20", "invalid rate \"20\"" },
		{ "r/s", "invalid rate \"r/s\"" },
		{ "0r/s", "invalid rate \"0r/s\"" },
		{ "20r/h", "invalid rate \"20r/h\"" },
		{ "-5r/s", "invalid rate \"-5r/s\"" },
		{ "1.5r/s", "invalid rate \"1.5r/s\"" },
		{ "20r/s burst=0", "invalid burst value \"burst=0\"" },
		{ "20r/s burst=x", "invalid burst value \"burst=x\"" },
		{ "20r/s nodelay", "invalid parameter \"nodelay\"" },
		{ "off burst=5", "invalid parameter \"burst=5\"" },
	};
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	char			*text;
	size_t			 i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		xasprintf(&text, "acme_issuer le {\n uri https://a.test/;\n"
		    " request_rate %s;\n}\n", ok[i].arg);
		conf = conf_test_ok(t, text);
		ci = TAILQ_FIRST(&conf->c_issuers);
		assert_true(ci->ci_rate > ok[i].rate - 1e-9 &&
		    ci->ci_rate < ok[i].rate + 1e-9);
		assert_int_equal(ci->ci_burst, ok[i].burst);
		conf_free(conf);
		free(text);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xasprintf(&text, "acme_issuer le {\n uri https://a.test/;\n"
		    " request_rate %s;\n}\n", bad[i].arg);
		conf_test_err(t, text, "%s/sidecar.conf:3: %s", t->dir,
		    bad[i].msg);
		free(text);
	}
}

static void
test_conf_challenge(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;

	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " challenge http-02;\n}\n",
	    "%s/sidecar.conf:3: invalid challenge type \"http-02\": use "
	    "http-01, dns-01 or tls-alpn-01", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " challenge tls-alpn-01;\n}\n"
	    "acme_certificate le *.a.test;\n",
	    "%s/sidecar.conf:5: wildcard identifier \"*.a.test\" needs "
	    "challenge dns-01: tls-alpn-01 cannot validate wildcard "
	    "identifiers", t->dir);
	conf_test_err(t, "tls_alpn_listen 127.0.0.1:x;\n",
	    "%s/sidecar.conf:1: invalid port in \"127.0.0.1:x\" of the "
	    "\"tls_alpn_listen\" directive", t->dir);
	conf_test_err(t, "tls_alpn_listen 127.0.0.1:443;\n"
	    "tls_alpn_listen off;\n",
	    "%s/sidecar.conf:2: \"tls_alpn_listen\" directive is duplicate",
	    t->dir);
	conf = conf_test_ok(t, "tls_alpn_listen 127.0.0.2:8443;\n"
	    "acme_issuer le {\n uri https://a.test/;\n"
	    " challenge tls-alpn-01;\n}\n"
	    "acme_certificate le a.test 192.0.2.1;\n");
	assert_string_equal(conf->c_alpn_addr, "127.0.0.2");
	assert_int_equal(conf->c_alpn_port, 8443);
	assert_int_equal(TAILQ_FIRST(&conf->c_certs)->cc_type,
	    CHALLENGE_TLS_ALPN_01);
	conf_free(conf);
	/* Off by default; "off" too. */
	conf = conf_test_ok(t, "tls_alpn_listen off;\n");
	assert_null(conf->c_alpn_addr);
	conf_free(conf);
	/* nginx-acme's unversioned name. */
	conf_free(conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " challenge http;\n}\n"));
}

static void
test_conf_eab(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;

	/* Standard base64 with padding, as CAs print it: 0xfb 0xff. */
	free(conf_test_write(t, "std.key", "+/8=\n"));
	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " external_account_key k std.key;\n}\n");
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_int_equal(ci->ci_eab_hmac_len, 2);
	assert_memory_equal(ci->ci_eab_hmac, "\xfb\xff", 2);
	conf_free(conf);

	free(conf_test_write(t, "bad.key", "not base64!\n"));
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " external_account_key k bad.key;\n}\n",
	    "%s/sidecar.conf:3: invalid external account key in "
	    "\"%s/bad.key\"", t->dir, t->dir);
	/* An inline key is never echoed back. */
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " external_account_key k data:s3cr3t!;\n}\n",
	    "%s/sidecar.conf:3: invalid external account key", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " external_account_key k data:;\n}\n",
	    "%s/sidecar.conf:3: invalid external account key", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " external_account_key k none.key;\n}\n",
	    "%s/sidecar.conf:3: open() \"%s/none.key\" failed (No such file "
	    "or directory)", t->dir, t->dir);
}

static void
test_conf_listen_and_zone(void **state)
{
	static const struct {
		const char	*arg;
		const char	*addr;
		int		 port;
	} ok[] = {
		{ "8080", "0.0.0.0", 8080 },
		{ "*:81", "0.0.0.0", 81 },
		{ "127.0.0.1", "127.0.0.1", 80 },
		{ "[::1]:8080", "::1", 8080 },
		{ "[::]", "::", 80 },
		{ "127.0.0.1:0", "127.0.0.1", 0 },
		{ "127.0.0.1:65535", "127.0.0.1", 65535 },
	};
	static const struct {
		const char	*arg;
		const char	*what;
	} bad[] = {
		{ "65536", "port" },
		{ "127.0.0.1:", "port" },
		{ "127.0.0.1:http", "port" },
		{ "[::1]:-1", "port" },
		{ "example.test:80", "host" },
		{ "::1", "host" },
		{ "[::1", "host" },
		{ "[::1]x", "host" },
		{ "[127.0.0.1]:80", "host" },
	};
	static const struct {
		const char	*arg;
		const char	*msg;
	} zbad[] = {
		{ "ngx_acme_shared:1M", "invalid parameter "
		    "\"ngx_acme_shared:1M\"" },
		{ "zone=x", "invalid zone size \"zone=x\"" },
		{ "zone=x:1G", "invalid zone size \"zone=x:1G\"" },
		{ "zone=x:", "invalid zone size \"zone=x:\"" },
		{ "zone=:1M", "invalid zone name \"\"" },
		{ "zone=a/b:1M", "invalid zone name \"a/b\"" },
		{ "zone=x:16k", "zone \"x\" is too small" },
		{ "zone=x:2048M", "invalid zone size \"zone=x:2048M\"" },
	};
	struct conf_test	*t = *state;
	struct conf		*conf;
	char			*text;
	size_t			 i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		xasprintf(&text, "challenge_listen %s;", ok[i].arg);
		conf = conf_test_ok(t, text);
		assert_string_equal(conf->c_challenge_addr, ok[i].addr);
		assert_int_equal(conf->c_challenge_port, ok[i].port);
		conf_free(conf);
		free(text);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xasprintf(&text, "\nchallenge_listen '%s';", bad[i].arg);
		conf_test_err(t, text, "%s/sidecar.conf:2: invalid %s in \"%s\" "
		    "of the \"challenge_listen\" directive", t->dir,
		    bad[i].what, bad[i].arg);
		free(text);
	}

	conf = conf_test_ok(t, "acme_shared_zone zone=z:65536;");
	assert_string_equal(conf->c_zone_name, "z");
	assert_int_equal(conf->c_zone_size, 65536);
	conf_free(conf);
	conf = conf_test_ok(t, "acme_shared_zone zone=z.1:512k;");
	assert_int_equal(conf->c_zone_size, 512 * 1024);
	conf_free(conf);
	for (i = 0; i < sizeof(zbad) / sizeof(zbad[0]); i++) {
		xasprintf(&text, "acme_shared_zone %s;", zbad[i].arg);
		conf_test_err(t, text, "%s/sidecar.conf:1: %s", t->dir,
		    zbad[i].msg);
		free(text);
	}
}

/* The tokens as nginx splits them: "${name}", "a}b", and if (... "x"). */
static void
test_conf_lexer_nginx_words(void **state)
{
	static const char *want[] = {
		"set", "$a", "${b}c", ";", "if", "($x", "=", "y", ")", "{",
		"return", "a}b", ";", "}", "x", "\\$", "{", "}",
	};
	struct conf_test	*t = *state;
	struct conf_lex		*lx;
	enum conf_tok		 tok;
	char			*path, *msg = NULL;
	const char		*got;
	size_t			 i;
	int			 line;

	path = conf_test_write(t, "words.conf", "set $a ${b}c;\n"
	    "if ($x = \"y\") {\n return a}b;\n}\nx \\${}");
	assert_non_null(lx = conf_lex_open(path, NULL, &msg));
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		tok = conf_lex_next(lx, &line);
		assert_int_not_equal(tok, CONF_TOK_ERROR);
		got = tok == CONF_TOK_SEMI ? ";" : tok == CONF_TOK_LBRACE ?
		    "{" : tok == CONF_TOK_RBRACE ? "}" : lx->tok;
		assert_string_equal(got, want[i]);
	}
	assert_int_equal(conf_lex_next(lx, &line), CONF_TOK_EOF);
	conf_lex_free(lx);
	free(path);

	/* After a closing quote, '}' is as wrong as in nginx. */
	conf_test_err(t, "\nuser \"a\"}\n",
	    "%s/sidecar.conf:2: unexpected \"}\"", t->dir);
}

/* Write name (in the test folder) and load it as --nginx-conf alone. */
static struct conf *
conf_test_nginx(struct conf_test *t, const char *name, const char *text)
{
	struct conf	*conf;
	char		*path, *cause = NULL;

	path = conf_test_write(t, name, text);
	conf = conf_load_files(NULL, path, &cause);
	if (conf == NULL)
		fail_msg("unexpected error: %s", cause);
	assert_null(conf->c_file);
	assert_string_equal(conf->c_nginx_config, path);
	free(path);
	return conf;
}

/* Like conf_test_err(), for nginx.conf alone. */
static void PRINTFLIKE(3, 4)
conf_test_nginx_err(struct conf_test *t, const char *text,
    const char *want, ...)
{
	va_list		 ap;
	char		*path, *cause = NULL, *expect;

	va_start(ap, want);
	if (vasprintf(&expect, want, ap) == -1)
		fail();
	va_end(ap);
	path = conf_test_write(t, "nginx.conf", text);
	assert_null(conf_load_files(NULL, path, &cause));
	assert_non_null(cause);
	assert_string_equal(cause, expect);
	free(cause);
	free(expect);
	free(path);
}

/*
 * nginx-acme 0.4's common_name_in_csr (off by default) and state_path
 * off, in the sidecar's file and in nginx.conf.  state_path off is a
 * private folder that the process removes at exit: a child loads the
 * configuration, so that its exit can be watched.
 */
static void
test_conf_nginx_acme_04(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*a, *b;
	struct stat		 st;
	struct dirent		*de;
	DIR			*d;
	pid_t			 pid;
	int			 status, left = 0;
	char			*root;

	conf = conf_test_ok(t, ISSUER);
	assert_false(TAILQ_FIRST(&conf->c_issuers)->ci_cn_in_csr);
	conf_free(conf);
	conf_test_err(t, "acme_issuer le {\n    uri https://acme.test/d;\n"
	    "    common_name_in_csr yes;\n}\n", "%s/sidecar.conf:3: invalid "
	    "value \"yes\" in \"common_name_in_csr\" directive, it must be "
	    "\"on\" or \"off\"", t->dir);

	if ((pid = fork()) == 0) {
		setenv("TMPDIR", t->dir, 1);
		unsetenv("RUNTIME_DIRECTORY");
		conf = conf_test_nginx(t, "nginx.conf", "http {\n"
		    "acme_issuer a {\n    uri https://acme.test/d;\n"
		    "    state_path off;\n    common_name_in_csr ON;\n}\n"
		    "acme_issuer b {\n    uri https://acme.test/d;\n"
		    "    state_path off;\n}\n}\n");
		a = TAILQ_FIRST(&conf->c_issuers);
		b = TAILQ_NEXT(a, ci_entry);
		root = xstrdup(conf_volatile_dir());
		/* Private, in TMPDIR, one folder per issuer below it. */
		if (strncmp(root, t->dir, strlen(t->dir)) != 0 ||
		    stat(root, &st) == -1 || !S_ISDIR(st.st_mode) ||
		    (st.st_mode & 07777) != 0700 || !a->ci_cn_in_csr ||
		    b->ci_cn_in_csr || strcmp(strrchr(a->ci_state_path, '/'),
		    "/a") != 0 || strcmp(strrchr(b->ci_state_path, '/'),
		    "/b") != 0 || strncmp(a->ci_state_path, root,
		    strlen(root)) != 0 || mkdir(a->ci_state_path, 0700) == -1)
			_exit(2);
		conf_free(conf);
		/* A reload keeps the folder. */
		conf = conf_test_nginx(t, "nginx.conf", "http {\n"
		    "acme_issuer a {\n    uri https://acme.test/d;\n"
		    "    state_path off;\n}\n}\n");
		if (strcmp(conf_volatile_dir(), root) != 0)
			_exit(3);
		conf_free(conf);
		free(root);
		exit(0);	/* its atexit handler removes the folder */
	}
	assert_int_not_equal(pid, -1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_non_null(d = opendir(t->dir));
	while ((de = readdir(d)) != NULL)
		left += strncmp(de->d_name, "acme-sidecar.", 13) == 0;
	closedir(d);
	assert_int_equal(left, 0);
	/* This process made none. */
	assert_null(conf_volatile_dir());
}

static void
conf_test_mkdir(struct conf_test *t, const char *name)
{
	char	*p;

	xasprintf(&p, "%s/%s", t->dir, name);
	assert_int_equal(mkdir(p, 0700), 0);
	free(p);
}

/* The seed's "Full example", verbatim, in a Debian-like nginx.conf. */
static const char conf_test_seed[] =
    "resolver 127.0.0.1:53;\n"
    "\n"
    "acme_issuer example {\n"
    "    uri         https://acme.example.com/directory;\n"
    "    # contact   admin@example.test;\n"
    "    state_path  /var/cache/nginx/acme-example;\n"
    "    accept_terms_of_service;\n"
    "}\n"
    "\n"
    "acme_shared_zone zone=ngx_acme_shared:1M;\n"
    "\n"
    "server {\n"
    "    listen 443 ssl;\n"
    "    server_name  .example.test;\n"
    "\n"
    "    acme_certificate example;\n"
    "\n"
    "    ssl_certificate       $acme_certificate;\n"
    "    ssl_certificate_key   $acme_certificate_key;\n"
    "\n"
    "    # do not parse the certificate on each request\n"
    "    ssl_certificate_cache max=2;\n"
    "}\n"
    "\n"
    "server {\n"
    "    # listener on port 80 is required to process ACME HTTP-01 "
    "challenges\n"
    "    listen 80;\n"
    "\n"
    "    location / {\n"
    "        return 404;\n"
    "    }\n"
    "}\n";

static void
test_nginx_seed_example(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	struct conf_cert	*cc;
	char			*acme;

	conf_test_mkdir(t, "conf.d");
	acme = conf_test_write(t, "conf.d/acme.conf", conf_test_seed);
	free(conf_test_write(t, "mime.types", "types {\n    text/html  html;\n"
	    "    image/svg+xml  svg svgz;\n}\n"));
	conf = conf_test_nginx(t, "nginx.conf",
	    "user root;\n"
	    "worker_processes auto;\n"
	    "pid /run/nginx.pid;\n"
	    "include modules-enabled/*.conf;\n"
	    "events {\n    worker_connections 768;\n}\n"
	    "http {\n"
	    "    include mime.types;\n"
	    "    default_type application/octet-stream;\n"
	    "    include conf.d/*.conf;\n"
	    "}\n");

	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_non_null(ci);
	assert_null(TAILQ_NEXT(ci, ci_entry));
	assert_string_equal(ci->ci_name, "example");
	assert_string_equal(ci->ci_uri, "https://acme.example.com/directory");
	assert_string_equal(ci->ci_state_path, "/var/cache/nginx/acme-example");
	assert_int_equal(ci->ci_accept_tos, 1);
	assert_int_equal(ci->ci_ncontact, 0);
	assert_string_equal(ci->ci_file, acme);
	assert_int_equal(ci->ci_line, 3);

	assert_string_equal(conf->c_zone_name, "ngx_acme_shared");
	assert_int_equal(conf->c_zone_size, 1024 * 1024);
	assert_string_equal(conf->c_zone_path, "/dev/shm/ngx_acme_shared");
	assert_null(conf->c_zone_group);

	cc = TAILQ_FIRST(&conf->c_certs);
	assert_non_null(cc);
	assert_null(TAILQ_NEXT(cc, cc_entry));
	assert_string_equal(cc->cc_id, "example.test");
	assert_string_equal(cc->cc_issuer, "example");
	assert_int_equal(cc->cc_nidents, 2);
	assert_string_equal(cc->cc_idents[0], "example.test");
	assert_string_equal(cc->cc_idents[1], "www.example.test");
	assert_int_equal(cc->cc_key, KEY_ECDSA_256);
	assert_int_equal(cc->cc_nginx, 1);
	assert_string_equal(cc->cc_file, acme);
	assert_int_equal(cc->cc_line, 16);

	/* nginx's "user root;": the group named like the user. */
	assert_string_equal(conf->c_nginx_group, "root");
	/* The sidecar's own directives keep their defaults. */
	assert_string_equal(conf->c_challenge_addr, "0.0.0.0");
	assert_int_equal(conf->c_challenge_port, 80);
	assert_null(conf->c_user);
	conf_free(conf);
	free(acme);
}

/*
 * Relative paths resolve against the main nginx.conf's folder, also in
 * files that folder's subfolders include: sites/snippets/ is a decoy.
 */
static void
test_nginx_include_prefix(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	struct conf_cert	*cc;
	char			*p;

	conf_test_mkdir(t, "sites");
	conf_test_mkdir(t, "snippets");
	conf_test_mkdir(t, "sites/snippets");
	free(conf_test_write(t, "snippets/names.conf", "server_name a.test;\n"));
	free(conf_test_write(t, "sites/snippets/names.conf",
	    "server_name wrong.test;\n"));
	free(conf_test_write(t, "issuer.inc", "contact x@y.test;\n"));
	free(conf_test_write(t, "sites/a.conf",
	    "acme_issuer le {\n"
	    "    uri https://acme.test/dir;\n"
	    "    state_path state/le;\n"
	    "    ssl_trusted_certificate ca.pem;\n"
	    "    include issuer.inc;\n"
	    "}\n"
	    "server {\n"
	    "    include snippets/names.conf;\n"
	    "    acme_certificate le;\n"
	    "}\n"));
	conf = conf_test_nginx(t, "nginx.conf", "http {\n"
	    "    include sites/*.conf;\n}\n");
	ci = TAILQ_FIRST(&conf->c_issuers);
	xasprintf(&p, "%s/state/le", t->dir);
	assert_string_equal(ci->ci_state_path, p);
	free(p);
	xasprintf(&p, "%s/ca.pem", t->dir);
	assert_string_equal(ci->ci_trusted_cert, p);
	free(p);
	assert_string_equal(ci->ci_contact[0], "mailto:x@y.test");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.test");
	assert_int_equal(cc->cc_nidents, 1);
	xasprintf(&p, "%s/sites/a.conf", t->dir);
	assert_string_equal(cc->cc_file, p);
	free(p);
	assert_int_equal(cc->cc_line, 9);
	assert_string_equal(conf->c_nginx_group, "nogroup");
	conf_free(conf);

	/* A missing plain include is an error where it is included. */
	conf_test_nginx_err(t, "http {\n    include none.conf;\n}\n",
	    "%s/nginx.conf:2: open() \"%s/none.conf\" failed (No such file "
	    "or directory)", t->dir, t->dir);
}

#define NGX_ISSUER "    acme_issuer le {\n        uri https://acme.test/;\n" \
	"    }\n"

static void
test_nginx_identifiers(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;

	conf = conf_test_nginx(t, "nginx.conf", "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name *.example.test ~^re$ _;\n"
	    "        acme_certificate le a.example.test B.example.test;\n"
	    "    }\n"
	    "    server {\n"
	    "        acme_certificate le key=rsa:2048;\n"
	    "        server_name Example.TEST \"\" _;\n"
	    "        server_name www.example.test api.example.test;\n"
	    "    }\n"
	    "    server {\n"
	    "        server_name c.test;\n"
	    "    }\n"
	    "}\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.example.test");
	assert_int_equal(cc->cc_nidents, 2);
	assert_string_equal(cc->cc_idents[1], "b.example.test");
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_string_equal(cc->cc_id, "example.test_rsa2048");
	assert_int_equal(cc->cc_key, KEY_RSA_2048);
	assert_int_equal(cc->cc_nidents, 3);
	assert_string_equal(cc->cc_idents[0], "example.test");
	assert_string_equal(cc->cc_idents[1], "www.example.test");
	assert_string_equal(cc->cc_idents[2], "api.example.test");
	assert_int_equal(cc->cc_line, 10);
	assert_null(TAILQ_NEXT(cc, cc_entry));
	conf_free(conf);

	/* Two server blocks asking for one certificate share it. */
	conf = conf_test_nginx(t, "nginx.conf", "http {\n" NGX_ISSUER
	    "    server { listen 443 ssl; server_name .a.test;"
	    " acme_certificate le; }\n"
	    "    server { listen 8443 ssl; server_name a.test www.a.test;"
	    " acme_certificate le; }\n"
	    "}\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.test");
	assert_int_equal(cc->cc_line, 5);
	assert_null(TAILQ_NEXT(cc, cc_entry));
	conf_free(conf);
	/* The same id for other names is still a conflict. */
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server { server_name a.test; acme_certificate le; }\n"
	    "    server { server_name a.test b.test; acme_certificate le; }\n"
	    "}\n",
	    "%s/nginx.conf:6: duplicate acme_certificate \"a.test\", first "
	    "defined at %s/nginx.conf:5", t->dir, t->dir);
	/*
	 * So is another profile=: one id, one certificate, one profile.  Not
	 * taken for the first server's, which would leave a changed
	 * profile= unseen by a reload.
	 */
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server { server_name a.test; acme_certificate le "
	    "profile=shortlived; }\n"
	    "    server { server_name a.test; acme_certificate le; }\n"
	    "}\n",
	    "%s/nginx.conf:6: duplicate acme_certificate \"a.test\", first "
	    "defined at %s/nginx.conf:5", t->dir, t->dir);
	conf = conf_test_nginx(t, "nginx.conf", "http {\n" NGX_ISSUER
	    "    server { server_name a.test; acme_certificate le "
	    "profile=shortlived; }\n"
	    "    server { listen 8443; server_name a.test; acme_certificate le "
	    "profile=shortlived; }\n"
	    "}\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_profile, "shortlived");
	assert_null(TAILQ_NEXT(cc, cc_entry));
	conf_free(conf);
}

static void
test_nginx_errors(void **state)
{
	struct conf_test	*t = *state;
	char			*text;
	size_t			 i;

	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name a.test;\n"
	    "        server_name b.test *.example.test;\n"
	    "        acme_certificate le;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:7: wildcard identifier \"*.example.test\" needs "
	    "challenge dns-01: http-01 cannot validate wildcard identifiers",
	    t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        acme_certificate le;\n"
	    "        server_name ~^www\\d+\\.example\\.test$;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:7: server_name \"~^www\\d+\\.example\\.test$\" cannot "
	    "be an ACME identifier: it is a regular expression; list the "
	    "identifiers in \"acme_certificate\"", t->dir);
	/* nginx -t's words: "user" takes a user and maybe a group. */
	conf_test_nginx_err(t, "user;\nhttp {\n}\n",
	    "%s/nginx.conf:1: invalid number of arguments in \"user\" "
	    "directive", t->dir);
	conf_test_nginx_err(t, "user www-data www-data extra;\nhttp {\n}\n",
	    "%s/nginx.conf:1: invalid number of arguments in \"user\" "
	    "directive", t->dir);
	/* Found by tests/fuzz: this used to stop the daemon. */
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name ;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:6: invalid number of arguments in \"server_name\" "
	    "directive", t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name _ \"\";\n"
	    "        acme_certificate le key=rsa:2048;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:7: no identifiers in \"acme_certificate\" "
	    "directive, and no server_name that can be one", t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n        acme_certificate le;\n    }\n}\n",
	    "%s/nginx.conf:6: no identifiers in \"acme_certificate\" "
	    "directive, and no server_name that can be one", t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name a_b.test;\n"
	    "        acme_certificate le;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:6: invalid identifier \"a_b.test\"", t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name a.test;\n"
	    "        acme_certificate nosuch;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:7: unknown acme_issuer \"nosuch\"", t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    server {\n"
	    "        server_name a.test;\n"
	    "        acme_certificate le;\n"
	    "        acme_certificate le key=ecdsa:384;\n"
	    "    }\n}\n",
	    "%s/nginx.conf:8: \"acme_certificate\" directive is duplicate: "
	    "the server has an ECDSA certificate from %s/nginx.conf:7 "
	    "already, and a second one must have the other key type",
	    t->dir, t->dir);
	conf_test_nginx_err(t, "http {\n" NGX_ISSUER
	    "    acme_certificate le a.test;\n}\n",
	    "%s/nginx.conf:5: \"acme_certificate\" directive is not allowed "
	    "here", t->dir);
	conf_test_nginx_err(t, "http {\n    server {\n" NGX_ISSUER "}\n}\n",
	    "%s/nginx.conf:3: \"acme_issuer\" directive is not allowed here",
	    t->dir);
	conf_test_nginx_err(t, "\nacme_shared_zone zone=z:1M;\n",
	    "%s/nginx.conf:2: \"acme_shared_zone\" directive is not allowed "
	    "here", t->dir);
	conf_test_nginx_err(t, "http {\n    acme_issuer_typo x;\n}\n",
	    "%s/nginx.conf:2: unknown directive \"acme_issuer_typo\"", t->dir);
	conf_test_nginx_err(t, "http {\n    acme_issuer le {\n"
	    "        uri https://a.test/;\n        listen 80;\n    }\n}\n",
	    "%s/nginx.conf:4: unknown directive \"listen\"", t->dir);
	conf_test_nginx_err(t, "http {\n    server {\n        location / {\n"
	    "            return 404;\n    }\n}\n",
	    "%s/nginx.conf:6: unexpected end of file, expecting \"}\"", t->dir);

	/* Nesting is capped, so a hostile file cannot exhaust the stack. */
	text = xmalloc(70 * 4 + 1);
	for (i = 0; i < 70; i++)
		memcpy(text + i * 4, "a {\n", 4);
	text[70 * 4] = '\0';
	conf_test_nginx_err(t, text, "%s/nginx.conf:65: blocks are nested too "
	    "deep (more than 64 levels)", t->dir);
	free(text);
}

/* What the walk reads past, without judging it, and what it skips. */
static void
test_nginx_skips(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;

	conf = conf_test_nginx(t, "nginx.conf",
	    "load_module modules/ngx_http_acme_module.so;\n"
	    "events { use epoll; }\n"
	    "bogus_main_directive { whatever; }\n"
	    "stream {\n"
	    "    server { listen 12345; acme_certificate nosuch s.test; }\n"
	    "}\n"
	    "http {\n"
	    "    map $http_host $x {\n        default 0;\n"
	    "        ~^(?<n>.+)\\.test$ 1;\n    }\n"
	    "    upstream b { server 127.0.0.1:8080; }\n"
	    "    log_format main '$remote_addr \"$request\"';\n"
	    "    server_name ignored.test;\n"
	    NGX_ISSUER
	    "    server {\n"
	    "        server_name a.test;\n"
	    "        set $v ${host}x;\n"
	    "        if ($request_method = \"POST\") { return 405; }\n"
	    "        location ~ \"^/x{2}$\" { return 200 \"}\"; }\n"
	    "        location / { acme_certificate nosuch; include none; }\n"
	    "        acme_certificate le;\n"
	    "    }\n"
	    "}\n");
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "a.test");
	assert_null(TAILQ_NEXT(cc, cc_entry));
	assert_string_equal(TAILQ_FIRST(&conf->c_issuers)->ci_name, "le");
	conf_free(conf);
}

/* sidecar.conf and nginx.conf together. */
static void
test_nginx_merge(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;
	char			*side, *ngx, *other, *cause = NULL;

	side = conf_test_write(t, "sidecar.conf",
	    "acme_issuer le {\n uri https://acme.test/;\n}\n"
	    "challenge_listen 127.0.0.1:8080;\n"
	    "nginx_config nginx.conf;\n"
	    "acme_certificate ngx side.test;\n");
	ngx = conf_test_write(t, "nginx.conf", "http {\n"
	    "    acme_issuer ngx {\n        uri https://ngx.test/;\n    }\n"
	    "    server { server_name web.test; acme_certificate le; }\n"
	    "}\n");
	other = conf_test_write(t, "other.conf", "http {\n"
	    "    acme_issuer ngx {\n        uri https://ngx.test/;\n    }\n"
	    "    server { server_name other.test; acme_certificate ngx; }\n"
	    "}\n");

	/* Certificates may name the other file's issuers. */
	conf = conf_load(side, &cause);
	if (conf == NULL)
		fail_msg("unexpected error: %s", cause);
	assert_string_equal(conf->c_file, side);
	assert_string_equal(conf->c_nginx_config, ngx);
	assert_int_equal(conf->c_challenge_port, 8080);
	cc = TAILQ_FIRST(&conf->c_certs);
	assert_string_equal(cc->cc_id, "side.test");
	assert_string_equal(cc->cc_issuer, "ngx");
	assert_int_equal(cc->cc_nginx, 0);
	cc = TAILQ_NEXT(cc, cc_entry);
	assert_string_equal(cc->cc_id, "web.test");
	assert_string_equal(cc->cc_issuer, "le");
	assert_int_equal(cc->cc_nginx, 1);
	assert_string_equal(cc->cc_file, ngx);
	conf_free(conf);

	/* --nginx-conf wins over nginx_config. */
	conf = conf_load_files(side, other, &cause);
	if (conf == NULL)
		fail_msg("unexpected error: %s", cause);
	assert_string_equal(conf->c_nginx_config, other);
	cc = TAILQ_NEXT(TAILQ_FIRST(&conf->c_certs), cc_entry);
	assert_string_equal(cc->cc_id, "other.test");
	assert_null(TAILQ_NEXT(cc, cc_entry));
	conf_free(conf);

	/* Defined in both files: an error naming both places. */
	free(conf_test_write(t, "nginx.conf", "http {\n"
	    "    acme_issuer le {\n        uri https://b.test/;\n    }\n}\n"));
	assert_null(conf_load(side, &cause));
	assert_non_null(strstr(cause, "/nginx.conf:2: duplicate acme_issuer "
	    "\"le\", first defined at "));
	assert_non_null(strstr(cause, "/sidecar.conf:1"));
	free(cause);
	free(conf_test_write(t, "nginx.conf", "http {\n"
	    "    acme_issuer ngx {\n        uri https://ngx.test/;\n    }\n"
	    "    server {\n        server_name side.test;\n"
	    "        acme_certificate le;\n    }\n}\n"));
	assert_null(conf_load(side, &cause));
	assert_non_null(strstr(cause, "/nginx.conf:7: duplicate "
	    "acme_certificate \"side.test\", first defined at "));
	assert_non_null(strstr(cause, "/sidecar.conf:6"));
	free(cause);
	free(conf_test_write(t, "nginx.conf", "http {\n"
	    "    acme_issuer ngx {\n        uri https://ngx.test/;\n    }\n"
	    "    acme_shared_zone zone=n:1M;\n}\n"));
	free(conf_test_write(t, "sidecar.conf",
	    "acme_issuer le {\n uri https://acme.test/;\n}\n"
	    "acme_shared_zone zone=s:1M;\n"
	    "nginx_config nginx.conf;\n"
	    "acme_certificate ngx side.test;\n"));
	assert_null(conf_load(side, &cause));
	assert_non_null(strstr(cause, "/nginx.conf:5: \"acme_shared_zone\" "
	    "directive is duplicate, first defined at "));
	assert_non_null(strstr(cause, "/sidecar.conf:4"));
	free(cause);

	/* A missing nginx_config file: reported at nginx_config. */
	free(conf_test_write(t, "sidecar.conf", "\nnginx_config none.conf;\n"));
	assert_null(conf_load(side, &cause));
	assert_non_null(strstr(cause, "/sidecar.conf:2: open() \""));
	assert_non_null(strstr(cause, "/none.conf\" failed (No such file"));
	free(cause);
	free(side);
	free(ngx);
	free(other);
}

static void
test_conf_zone_params(void **state)
{
	static const struct {
		const char	*arg;
		const char	*msg;
	} bad[] = {
		{ "zone=z:1M path=z.shm", "invalid path \"z.shm\", it must be "
		    "an absolute file name" },
		{ "zone=z:1M path=", "invalid path \"\", it must be an absolute "
		    "file name" },
		{ "zone=z:1M path=/a path=/b", "duplicate \"path\" parameter" },
		{ "zone=z:1M group=no-such-group-here", "unknown group "
		    "\"no-such-group-here\"" },
		{ "zone=z:1M group=", "unknown group \"\"" },
		{ "zone=z:1M owner=no-such-user-here", "unknown user "
		    "\"no-such-user-here\"" },
		{ "zone=z:1M owner=root owner=root", "duplicate \"owner\" "
		    "parameter" },
		{ "zone=z:1M zone=y:1M", "duplicate \"zone\" parameter" },
		{ "path=/run/z", "\"acme_shared_zone\" must have \"zone\" "
		    "parameter" },
		{ "zone=z:1M mode=0600", "invalid parameter \"mode=0600\"" },
	};
	struct conf_test	*t = *state;
	struct conf		*conf;
	char			*text;
	size_t			 i;

	conf = conf_test_ok(t, "acme_shared_zone zone=z:1M path=/run/acme/z "
	    "group=root owner=root;");
	assert_string_equal(conf->c_zone_owner, "root");
	assert_string_equal(conf->c_zone_name, "z");
	assert_string_equal(conf->c_zone_path, "/run/acme/z");
	assert_string_equal(conf->c_zone_group, "root");
	conf_free(conf);
	conf = conf_test_ok(t, "acme_shared_zone zone=z:1M owner=1001;");
	assert_string_equal(conf->c_zone_owner, "1001");
	conf_free(conf);
	conf = conf_test_nginx(t, "nginx.conf", "http {\n"
	    "    acme_shared_zone group=root zone=n:512k;\n}\n");
	assert_string_equal(conf->c_zone_name, "n");
	assert_int_equal(conf->c_zone_size, 512 * 1024);
	assert_string_equal(conf->c_zone_path, "/dev/shm/n");
	assert_string_equal(conf->c_zone_group, "root");
	conf_free(conf);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xasprintf(&text, "\nacme_shared_zone %s;", bad[i].arg);
		conf_test_err(t, text, "%s/sidecar.conf:2: %s", t->dir,
		    bad[i].msg);
		free(text);
	}
	conf_test_err(t, "acme_shared_zone zone=a:1M;\n"
	    "acme_shared_zone zone=a:1M;\n",
	    "%s/sidecar.conf:2: \"acme_shared_zone\" directive is duplicate, "
	    "first defined at %s/sidecar.conf:1", t->dir, t->dir);
}

/*
 * nginx's user USER [GROUP]: the user and group its workers run as;
 * without it, nginx's built-in default (Debian's build: nobody:nogroup).
 */
static void
test_nginx_user(void **state)
{
	static const struct {
		const char	*text;
		const char	*user;
		const char	*group;
	} k[] = {
		{ "user root;", "root", "root" },
		{ "user daemon www-data;", "daemon", "www-data" },
		/* Debian's nobody has no group of its name: its primary. */
		{ "user nobody;", "nobody", "nogroup" },
		{ "user no-such-user-here;", "no-such-user-here", NULL },
		{ "worker_processes 1;", "nobody", "nogroup" },
	};
	struct conf_test	*t = *state;
	struct conf		*conf;
	size_t			 i;

	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		conf = conf_test_nginx(t, "nginx.conf", k[i].text);
		if (k[i].group == NULL)
			assert_null(conf->c_nginx_group);
		else
			assert_string_equal(conf->c_nginx_group, k[i].group);
		assert_string_equal(conf->c_nginx_user, k[i].user);
		/* The sidecar's own user is another directive. */
		assert_null(conf->c_user);
		conf_free(conf);
	}
}


static void
test_conf_control_group(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;

	conf = conf_test_ok(t, "control_socket /run/x/control.sock "
	    "group=adm;\n");
	assert_string_equal(conf->c_control_socket, "/run/x/control.sock");
	assert_string_equal(conf->c_control_group, "adm");
	conf_free(conf);
	conf = conf_test_ok(t, "control_socket /run/x/control.sock;\n");
	assert_null(conf->c_control_group);
	conf_free(conf);
	conf_test_err(t, "control_socket /x owner=adm;\n",
	    "%s/sidecar.conf:1: invalid parameter \"owner=adm\"", t->dir);
}

/* The issuer le, keeping its state in the test folder. */
static char *
conf_test_state_issuer(struct conf_test *t)
{
	char	*text;

	xasprintf(&text, "acme_issuer le {\n    uri https://acme.test/dir;\n"
	    "    state_path %s;\n}\nacme_certificate le a.example.test;\n",
	    t->dir);
	return text;
}

static void
test_conf_runtime_certs(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cert	*cc;
	char			*top = conf_test_state_issuer(t), *text, *cause;
	char			*idents[] = { "B.example.test", ".c.example.test" };
	char			*dup[] = { "a.example.test" }, *wild[] = { "*.x.test" };
	struct conf_issuer	*ci;

	free(conf_test_write(t, CONF_RUNTIME_FILE, "# comment\n"
	    "acme_certificate le x.example.test key=rsa:2048;\n"));
	conf = conf_test_ok(t, top);
	cc = TAILQ_LAST(&conf->c_certs, conf_certs);
	assert_string_equal(cc->cc_id, "x.example.test_rsa2048");
	assert_true(cc->cc_runtime);
	assert_false(TAILQ_FIRST(&conf->c_certs)->cc_runtime);

	/* Added as its configuration line would be, then written out. */
	cause = NULL;
	assert_int_equal(conf_runtime_add(conf, "le", idents, 2, "ecdsa:384",
	    "shortlived", "http-01", &cause), CONF_ADD_OK);
	assert_int_equal(conf_runtime_add(conf, "le", dup, 1, NULL, NULL, NULL,
	    &cause), CONF_ADD_DUPLICATE);
	assert_non_null(strstr(cause, "sidecar.conf:5"));
	free(cause);
	assert_int_equal(conf_runtime_add(conf, "le", wild, 1, NULL, NULL, NULL,
	    &cause), CONF_ADD_INVALID);
	assert_string_equal(cause, "wildcard identifier \"*.x.test\" needs "
	    "challenge dns-01: http-01 cannot validate wildcard identifiers");
	free(cause);
	assert_int_equal(conf_runtime_add(conf, "le", wild, 1, NULL, NULL,
	    "tls-alpn-01", &cause), CONF_ADD_INVALID);
	assert_string_equal(cause, "wildcard identifier \"*.x.test\" needs "
	    "challenge dns-01: tls-alpn-01 cannot validate wildcard "
	    "identifiers");
	free(cause);
	assert_int_equal(conf_runtime_add(conf, "nope", idents, 2, NULL,
	    NULL, NULL, &cause), CONF_ADD_INVALID);
	assert_string_equal(cause, "unknown acme_issuer \"nope\"");
	free(cause);
	assert_int_equal(conf_runtime_add(conf, "le", idents, 1, "dsa",
	    NULL, NULL, &cause), CONF_ADD_INVALID);
	assert_string_equal(cause, "invalid key type \"dsa\"");
	free(cause);

	ci = conf_find_issuer(conf, "le");
	text = conf_runtime_text(conf, ci);
	assert_non_null(strstr(text, "\nacme_certificate le x.example.test "
	    "key=rsa:2048;\nacme_certificate le b.example.test c.example.test "
	    "www.c.example.test key=ecdsa:384 profile=shortlived "
	    "challenge=http-01;\n"));
	/* What is written reads back the same. */
	free(conf_test_write(t, CONF_RUNTIME_FILE, text));
	free(text);
	conf_free(conf);
	conf = conf_test_ok(t, top);
	cc = TAILQ_LAST(&conf->c_certs, conf_certs);
	assert_string_equal(cc->cc_id, "b.example.test_ecdsa384");
	assert_int_equal(cc->cc_nidents, 3);
	assert_int_equal(cc->cc_line, 4);
	assert_string_equal(cc->cc_profile, "shortlived");
	assert_int_equal(cc->cc_challenge, CHALLENGE_HTTP_01);
	conf_free(conf);

	/* Only acme_certificate lines of its own issuer belong there. */
	free(conf_test_write(t, CONF_RUNTIME_FILE, "user root;\n"));
	conf_test_err(t, top, "%s/" CONF_RUNTIME_FILE ":1: \"user\" directive "
	    "is not allowed here: this file only holds the acme_certificate "
	    "lines added through the control API", t->dir);
	free(conf_test_write(t, CONF_RUNTIME_FILE,
	    "acme_certificate other y.example.test;\n"));
	conf_test_err(t, top, "%s/" CONF_RUNTIME_FILE ":1: acme_certificate of "
	    "issuer \"other\" in the file of issuer \"le\"", t->dir);
	free(conf_test_write(t, CONF_RUNTIME_FILE,
	    "\nacme_certificate le a.example.test;\n"));
	conf_test_err(t, top, "%s/" CONF_RUNTIME_FILE ":2: duplicate "
	    "acme_certificate \"a.example.test\", first defined at "
	    "%s/sidecar.conf:5", t->dir, t->dir);
	free(top);
}


/* cluster: every form of the address, the files read at once, the errors. */
static void
test_conf_cluster(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_cluster	*cl;
	unsigned char		 key[CLUSTER_KEY_LEN];
	char			*path, *text;
	const char		*secret = "0123456789abcdef0123456789abcdef\n";

	free(conf_test_write(t, "secret", secret));
	free(conf_test_write(t, "short", "too short\n"));
	free(conf_test_write(t, "empty", " \n"));
	free(conf_test_write(t, "pw", "s3cret\n"));
	free(conf_test_write(t, "acl", "fleet  s3cret pass\n"));
	free(conf_test_write(t, "twolines", "a\nb\n"));

	conf = conf_test_ok(t, "cluster redis://10.0.0.7:6380/3 "
	    "secret_file=secret password_file=acl prefix=fleet-a node=n1;\n");
	assert_non_null(cl = conf->c_cluster);
	assert_string_equal(cl->cl_host, "10.0.0.7");
	assert_int_equal(cl->cl_port, 6380);
	assert_int_equal(cl->cl_db, 3);
	assert_null(cl->cl_unix);
	assert_string_equal(cl->cl_user, "fleet");
	assert_string_equal(cl->cl_password, "s3cret pass");
	assert_string_equal(cl->cl_prefix, "fleet-a");
	assert_string_equal(cl->cl_node, "n1");
	assert_int_equal(cl->cl_line, 1);
	/* The key is derived from the trimmed secret, never kept itself. */
	assert_int_equal(cluster_seal_derive(secret, strlen(secret) - 1, key),
	    0);
	assert_memory_equal(cl->cl_key, key, sizeof(key));
	conf_free(conf);

	/* Defaults: port 6379, db 0, prefix, the host name as node. */
	conf = conf_test_ok(t, "cluster redis://redis.example secret_file="
	    "secret password_file=pw;\n");
	cl = conf->c_cluster;
	assert_string_equal(cl->cl_host, "redis.example");
	assert_int_equal(cl->cl_port, 6379);
	assert_int_equal(cl->cl_db, 0);
	assert_null(cl->cl_user);
	assert_string_equal(cl->cl_password, "s3cret");
	assert_string_equal(cl->cl_prefix, "acme-sidecar");
	assert_non_null(cl->cl_node);
	conf_free(conf);

	conf = conf_test_ok(t, "cluster unix:/run/redis/redis.sock?db=5 "
	    "secret_file=secret;\n");
	assert_string_equal(conf->c_cluster->cl_unix, "/run/redis/redis.sock");
	assert_int_equal(conf->c_cluster->cl_db, 5);
	assert_null(conf->c_cluster->cl_host);
	conf_free(conf);

	conf = conf_test_ok(t, "cluster redis://[::1]:7000 secret_file=secret;"
	    "\n");
	assert_string_equal(conf->c_cluster->cl_host, "::1");
	assert_int_equal(conf->c_cluster->cl_port, 7000);
	conf_free(conf);

	conf = conf_test_ok(t, "cluster sentinel://s1,[::1]:26380,s3:7/fleet/2 "
	    "secret_file=secret;\n");
	assert_string_equal(conf->c_cluster->cl_master, "fleet");
	assert_int_equal(conf->c_cluster->cl_db, 2);
	assert_int_equal(conf->c_cluster->cl_nsentinels, 3);
	assert_string_equal(conf->c_cluster->cl_sentinel_hosts[0], "s1");
	assert_int_equal(conf->c_cluster->cl_sentinel_ports[0], 26379);
	assert_string_equal(conf->c_cluster->cl_sentinel_hosts[1], "::1");
	assert_int_equal(conf->c_cluster->cl_sentinel_ports[1], 26380);
	assert_int_equal(conf->c_cluster->cl_sentinel_ports[2], 7);
	assert_null(conf->c_cluster->cl_host);
	conf_free(conf);
	conf_test_err(t, "cluster sentinel://s1 secret_file=secret;\n",
	    "%s/sidecar.conf:1: \"sentinel://s1\" of the \"cluster\" "
	    "directive names no master: sentinel://HOST[:PORT][,...]/MASTER[/DB]",
	    t->dir);
	conf_test_err(t, "cluster sentinel:///m secret_file=secret;\n",
	    "%s/sidecar.conf:1: \"sentinel:///m\" of the \"cluster\" "
	    "directive names no sentinel", t->dir);
	conf_test_err(t, "cluster sentinel://a,b:0/m secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid port in \"sentinel://a,b:0/m\" of the "
	    "\"cluster\" directive", t->dir);
	conf_test_err(t, "cluster sentinel://a/m/x secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid database in \"sentinel://a/m/x\" of "
	    "the \"cluster\" directive (0 to 65535)", t->dir);
	conf_test_err(t, "cluster sentinel://a,b,c,d,e,f,g,h,i/m "
	    "secret_file=secret;\n", "%s/sidecar.conf:1: more than 8 sentinels "
	    "in \"sentinel://a,b,c,d,e,f,g,h,i/m\" of the \"cluster\" "
	    "directive", t->dir);

	/* Without it: one node, files only. */
	conf = conf_test_ok(t, "challenge_listen 8080;\n");
	assert_null(conf->c_cluster);
	conf_free(conf);

	conf_test_err(t, "cluster redis://h;\n", "%s/sidecar.conf:1: "
	    "\"cluster\" needs secret_file=: private keys reach Redis only "
	    "sealed with it", t->dir);
	conf_test_err(t, "\ncluster redis://h secret_file=short;\n",
	    "%s/sidecar.conf:2: secret_file: \"short\" holds 9 bytes; at least "
	    "32 are needed (head -c 32 /dev/urandom | base64)", t->dir);
	conf_test_err(t, "cluster redis://h secret_file=empty;\n",
	    "%s/sidecar.conf:1: secret_file: \"%s/empty\" is empty", t->dir,
	    t->dir);
	conf_test_err(t, "cluster redis://h secret_file=none;\n",
	    "%s/sidecar.conf:1: secret_file: open() \"%s/none\" failed (No "
	    "such file or directory)", t->dir, t->dir);
	conf_test_err(t, "cluster redis://h secret_file=secret "
	    "password_file=twolines;\n", "%s/sidecar.conf:1: password_file: "
	    "one line is expected: PASSWORD, or USER PASSWORD", t->dir);
	conf_test_err(t, "cluster http://h secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid address \"http://h\" in the "
	    "\"cluster\" directive: redis://HOST:PORT[/DB], unix:/PATH or "
	    "sentinel://HOST:PORT/MASTER", t->dir);
	conf_test_err(t, "cluster redis://h:0 secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid port in \"redis://h:0\" of the "
	    "\"cluster\" directive", t->dir);
	conf_test_err(t, "cluster redis://h/x secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid database in \"redis://h/x\" of the "
	    "\"cluster\" directive (0 to 65535)", t->dir);
	conf_test_err(t, "cluster redis://:pw@h secret_file=secret;\n",
	    "%s/sidecar.conf:1: \"redis://:pw@h\" of the \"cluster\" "
	    "directive: give the password in password_file=, not in the URL",
	    t->dir);
	conf_test_err(t, "cluster redis:// secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid host in \"redis://\" of the "
	    "\"cluster\" directive", t->dir);
	conf_test_err(t, "cluster unix:run/r.sock secret_file=secret;\n",
	    "%s/sidecar.conf:1: invalid socket path in \"unix:run/r.sock\" of "
	    "the \"cluster\" directive: an absolute path of at most 107 bytes",
	    t->dir);
	conf_test_err(t, "cluster redis://h secret_file=secret node=a/b;\n",
	    "%s/sidecar.conf:1: invalid node \"a/b\": 1 to 64 letters, digits, "
	    "'.', '_' or '-'", t->dir);
	conf_test_err(t, "cluster redis://h secret_file=secret prefix=a "
	    "prefix=b;\n", "%s/sidecar.conf:1: duplicate parameter \"prefix\"",
	    t->dir);
	conf_test_err(t, "cluster redis://h secret_file=secret db=1;\n",
	    "%s/sidecar.conf:1: invalid parameter \"db=1\"", t->dir);
	conf_test_err(t, "cluster redis://a secret_file=secret;\n"
	    "cluster redis://b secret_file=secret;\n",
	    "%s/sidecar.conf:2: \"cluster\" directive is duplicate", t->dir);
	conf_test_err(t, ISSUER "acme_issuer x { uri https://a/d; cluster "
	    "redis://h secret_file=secret; }\n", "%s/sidecar.conf:4: "
	    "\"cluster\" directive is not allowed here", t->dir);

	/* A password file never shows in a message. */
	path = conf_test_write(t, "sidecar.conf", "cluster redis://h "
	    "secret_file=secret password_file=twolines;\n");
	text = NULL;
	assert_null(conf_load(path, &text));
	assert_null(strstr(text, "a\nb"));
	free(text);
	free(path);
}

/*
 * challenge_check: an address to connect to (wildcards are loopback),
 * a timeout, or off; without it, challenge_listen's address, else port 80
 * here when challenge_listen is off too.
 */
static void
test_conf_challenge_check(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	static const struct {
		const char	*arg, *addr;
		int		 port;
	} ok[] = {
		{ "127.0.0.1:8080", "127.0.0.1", 8080 },
		{ "8080", "127.0.0.1", 8080 },
		{ "10.1.2.3", "10.1.2.3", 80 },
		{ "*:81", "127.0.0.1", 81 },
		{ "0.0.0.0:82", "127.0.0.1", 82 },
		{ "localhost:83", "127.0.0.1", 83 },
		{ "[::]:84", "::1", 84 },
		{ "[2001:db8::1]", "2001:db8::1", 80 },
	};
	static const struct {
		const char	*arg, *what;
	} bad[] = {
		{ "example.test:80", "host" }, { "1.2.3:80", "host" },
		{ "[::1", "host" }, { "[::1]x", "host" }, { "", "host" },
		{ "127.0.0.1:0", "port" }, { "127.0.0.1:65536", "port" },
		{ "127.0.0.1:", "port" }, { "[::1]:x", "port" },
	};
	char	*text;
	size_t	 i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		xasprintf(&text, "challenge_check %s;", ok[i].arg);
		conf = conf_test_ok(t, text);
		assert_string_equal(conf->c_check_addr, ok[i].addr);
		assert_int_equal(conf->c_check_port, ok[i].port);
		assert_int_equal(conf->c_check_limit, READY_LIMIT);
		assert_non_null(strstr(conf->c_check_from,
		    "challenge_check at /"));
		assert_non_null(strstr(conf->c_check_from, "sidecar.conf:1"));
		conf_free(conf);
		free(text);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xasprintf(&text, "\nchallenge_check '%s';", bad[i].arg);
		conf_test_err(t, text, "%s/sidecar.conf:2: invalid %s in \"%s\" "
		    "of the \"challenge_check\" directive", t->dir, bad[i].what,
		    bad[i].arg);
		free(text);
	}

	conf = conf_test_ok(t, "challenge_check 8080 timeout=5s;");
	assert_int_equal(conf->c_check_limit, 5);
	conf_free(conf);
	conf = conf_test_ok(t, "challenge_listen [::]:8081;\n"
	    "challenge_check timeout=120;");
	assert_int_equal(conf->c_check_limit, 120);
	assert_string_equal(conf->c_check_addr, "::1");
	assert_int_equal(conf->c_check_port, 8081);
	assert_string_equal(conf->c_check_from, "challenge_listen");
	conf_free(conf);
	conf_test_err(t, "challenge_check 80 timeout=601s;", "%s/sidecar.conf:1: "
	    "invalid timeout \"601s\" of the \"challenge_check\" directive: "
	    "1s to 600s", t->dir);
	conf_test_err(t, "challenge_check 80 retry=1;", "%s/sidecar.conf:1: "
	    "invalid parameter \"retry=1\" of the \"challenge_check\" "
	    "directive", t->dir);
	conf_test_err(t, "challenge_check off timeout=1;", "%s/sidecar.conf:1: "
	    "invalid parameter \"timeout=1\" of the \"challenge_check\" "
	    "directive", t->dir);

	conf = conf_test_ok(t, "challenge_check off;");
	assert_int_equal(conf->c_check_off, 1);
	assert_null(conf->c_check_addr);
	conf_free(conf);
	conf = conf_test_ok(t, "");
	assert_string_equal(conf->c_check_addr, "127.0.0.1");
	assert_int_equal(conf->c_check_port, 80);
	assert_string_equal(conf->c_check_from, "challenge_listen");
	conf_free(conf);
	conf = conf_test_ok(t, "challenge_listen off;");
	assert_int_equal(conf->c_challenge_off, 1);
	assert_string_equal(conf->c_check_addr, "127.0.0.1");
	assert_int_equal(conf->c_check_port, 80);
	conf_free(conf);
}

/*
 * nginx.conf's listens: the first on port 80 is the check's address,
 * else the first plain-HTTP one; ssl, quic, unix: and host names are
 * passed over; challenge_check in the sidecar's file wins.
 */
static void
test_nginx_check_listen(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	char			*side, *ngx, *cause = NULL;
	static const char	*text =
	    "http {\n"
	    "  server { listen 443 ssl; listen unix:/run/x.sock; }\n"
	    "  server { listen 127.0.0.1:8080 default_server; }\n"
	    "  server { listen 8443 quic; listen example.test:80;\n"
	    "    listen [::]:80 ipv6only=on;\n"
	    "    listen 80; }\n"
	    "}\n";

	conf = conf_test_nginx(t, "nginx.conf", text);
	assert_string_equal(conf->c_check_addr, "::1");
	assert_int_equal(conf->c_check_port, 80);
	assert_non_null(strstr(conf->c_check_from, "nginx.conf:5"));
	conf_free(conf);

	conf = conf_test_nginx(t, "nginx.conf",
	    "http { server { listen 443 ssl; listen 127.0.0.2:8080; } }\n");
	assert_string_equal(conf->c_check_addr, "127.0.0.2");
	assert_int_equal(conf->c_check_port, 8080);
	conf_free(conf);

	/* Only TLS listens: challenge_listen's. */
	conf = conf_test_nginx(t, "nginx.conf",
	    "http { server { listen 443 ssl; } }\n");
	assert_string_equal(conf->c_check_from, "challenge_listen");
	conf_free(conf);

	side = conf_test_write(t, "sidecar.conf",
	    "challenge_check 127.0.0.1:9000;\n");
	ngx = conf_test_write(t, "nginx.conf", text);
	assert_non_null(conf = conf_load_files(side, ngx, &cause));
	assert_string_equal(conf->c_check_addr, "127.0.0.1");
	assert_int_equal(conf->c_check_port, 9000);
	conf_free(conf);
	free(side);
	free(ngx);
}

/*
 * Where tls-alpn-01's readiness check makes its handshake through
 * nginx: the first ssl listen on port 443, else the first ssl listen.
 */
static void
test_nginx_tls_check_listen(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;

	conf = conf_test_nginx(t, "nginx.conf",
	    "http {\n"
	    "  server { listen 80; listen 127.0.0.2:8443 ssl; }\n"
	    "  server { listen [::1]:443 ssl http2; }\n"
	    "  server { listen 127.0.0.3:443 ssl; }\n"
	    "}\n");
	assert_string_equal(conf->c_tls_check_addr, "::1");
	assert_int_equal(conf->c_tls_check_port, 443);
	assert_non_null(strstr(conf->c_tls_check_from, "nginx.conf:3"));
	conf_free(conf);

	conf = conf_test_nginx(t, "nginx.conf",
	    "http { server { listen 8443 ssl; listen 127.0.0.2:9443 ssl; } }\n");
	assert_string_equal(conf->c_tls_check_addr, "127.0.0.1");
	assert_int_equal(conf->c_tls_check_port, 8443);
	conf_free(conf);

	conf = conf_test_nginx(t, "nginx.conf",
	    "http { server { listen 80; } }\n");
	assert_null(conf->c_tls_check_addr);
	conf_free(conf);
}

#define UPDATE_ISSUER "acme_issuer le {\n    uri https://acme.test/dir;\n" \
	"    challenge dns-01;\n"

/*
 * dns_update SERVER[:PORT] key=FILE [zone=ZONE]: its TSIG key read at load,
 * its errors at its line; exactly one publisher per dns-01 issuer.
 */
static void
test_conf_dns_update(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	struct conf_cert	*cc;
	char			*text;

	free(conf_test_write(t, "tsig.key", "# tsig-keygen's output\n"
	    "key \"up-key\" {\n\talgorithm hmac-sha256;\n"
	    "\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\";\n};\n"));
	free(conf_test_write(t, "nosecret.key",
	    "key \"up-key\" { algorithm hmac-sha256; };\n"));
	free(conf_test_write(t, "md5.key", "key \"k\" { algorithm hmac-md5; "
	    "secret \"c2VjcmV0\"; };\n"));
	free(conf_test_write(t, "open.key", "key \"k\" { algorithm hmac-sha256; "
	    "secret \"c2VjcmV0\";\n"));

	xasprintf(&text, UPDATE_ISSUER "    dns_update [::1]:5353 "
	    "key=%s/tsig.key zone=Example.test.;\n}\n"
	    "acme_certificate le *.example.test;\n", t->dir);
	conf = conf_test_ok(t, text);
	free(text);
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_null(ci->ci_dns_hook);
	assert_non_null(ci->ci_dns_update);
	assert_non_null(strstr(ci->ci_dns_update, "[::1]:5353 key="));
	assert_non_null(strstr(ci->ci_dns_update, " zone=Example.test."));
	cc = TAILQ_FIRST(&conf->c_certs);
	conf_cert_resolve(cc, ci);
	assert_string_equal(cc->cc_dns_update, ci->ci_dns_update);
	assert_null(cc->cc_dns_hook);
	conf_free(conf);

	xasprintf(&text, UPDATE_ISSUER "    dns_hook /bin/true;\n"
	    "    dns_update 127.0.0.1 key=%s/tsig.key zone=a.test;\n}\n",
	    t->dir);
	conf_test_err(t, text, "%s/sidecar.conf:5: \"dns_hook\" and "
	    "\"dns_update\" in one issuer: it publishes through one of them",
	    t->dir);
	free(text);
	xasprintf(&text, UPDATE_ISSUER
	    "    dns_update 127.0.0.1 key=%s/missing.key zone=a.test;\n}\n",
	    t->dir);
	conf_test_err(t, text, "%s/sidecar.conf:4: TSIG key: open() "
	    "\"%s/missing.key\" failed (No such file or directory)", t->dir,
	    t->dir);
	free(text);
	xasprintf(&text, UPDATE_ISSUER
	    "    dns_update 127.0.0.1 key=%s/nosecret.key zone=a.test;\n}\n",
	    t->dir);
	conf_test_err(t, text, "%s/sidecar.conf:4: TSIG key file "
	    "%s/nosecret.key: key \"up-key\" has no secret", t->dir, t->dir);
	free(text);
	xasprintf(&text, UPDATE_ISSUER
	    "    dns_update 127.0.0.1 key=%s/md5.key zone=a.test;\n}\n",
	    t->dir);
	conf_test_err(t, text, "%s/sidecar.conf:4: TSIG key file "
	    "%s/md5.key: key \"k\": algorithm \"hmac-md5\" is neither "
	    "hmac-sha256 nor hmac-sha512", t->dir, t->dir);
	free(text);
	xasprintf(&text, UPDATE_ISSUER
	    "    dns_update 127.0.0.1 key=%s/open.key zone=a.test;\n}\n",
	    t->dir);
	conf_test_err(t, text, "%s/sidecar.conf:4: TSIG key file "
	    "%s/open.key: key \"k\": \"}\" expected", t->dir, t->dir);
	free(text);
	/* Without zone=, SERVER is asked for the zone at each update. */
	xasprintf(&text, UPDATE_ISSUER
	    "    dns_update 127.0.0.1:53 key=%s/tsig.key;\n}\n", t->dir);
	conf = conf_test_ok(t, text);
	free(text);
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_non_null(strstr(ci->ci_dns_update, "127.0.0.1:53 key="));
	assert_null(strstr(ci->ci_dns_update, "zone="));
	conf_free(conf);
	conf_test_err(t, UPDATE_ISSUER
	    "    dns_update 127.0.0.1:53 zone=a.test;\n}\n",
	    "%s/sidecar.conf:4: dns_update 127.0.0.1:53 needs key=FILE",
	    t->dir);
	conf_test_err(t, UPDATE_ISSUER
	    "    dns_update ns1.a.test key=/k zone=a.test;\n}\n",
	    "%s/sidecar.conf:4: dns_update \"ns1.a.test\": not an IP "
	    "address, with an optional :PORT", t->dir);
	conf_test_err(t, UPDATE_ISSUER
	    "    dns_update 127.0.0.1:99999 key=/k zone=a.test;\n}\n",
	    "%s/sidecar.conf:4: dns_update \"127.0.0.1:99999\": not an IP "
	    "address, with an optional :PORT", t->dir);
	conf_test_err(t, UPDATE_ISSUER
	    "    dns_update 127.0.0.1 key=k zone=a.test;\n}\n",
	    "%s/sidecar.conf:4: invalid parameter \"key=k\" of dns_update: "
	    "key=/ABSOLUTE/FILE and zone=ZONE, once each", t->dir);
}

/* request_timeout TIME: 30 s unless set, 1 s to 10 min, once. */
static void
test_conf_request_timeout(void **state)
{
	static const struct {
		const char	*arg;
		int		 secs;
	} ok[] = {
		{ "3s", 3 },
		{ "45", 45 },
		{ "2m", 120 },
		{ "10m", 600 },
	};
	static const char *bad[] = { "0s", "11m", "601", "5h", "s", "-1s",
	    "1.5s" };
	struct conf_test	*t = *state;
	struct conf		*conf;
	char			*text;
	size_t			 i;

	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n}\n");
	assert_int_equal(TAILQ_FIRST(&conf->c_issuers)->ci_request_timeout,
	    30);
	conf_free(conf);
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		xasprintf(&text, "acme_issuer le {\n uri https://a.test/;\n"
		    " request_timeout %s;\n}\n", ok[i].arg);
		conf = conf_test_ok(t, text);
		assert_int_equal(
		    TAILQ_FIRST(&conf->c_issuers)->ci_request_timeout,
		    ok[i].secs);
		conf_free(conf);
		free(text);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xasprintf(&text, "acme_issuer le {\n uri https://a.test/;\n"
		    " request_timeout %s;\n}\n", bad[i]);
		conf_test_err(t, text, "%s/sidecar.conf:3: invalid value \"%s\" "
		    "in \"request_timeout\" directive, it must be from 1s to "
		    "10m", t->dir, bad[i]);
		free(text);
	}
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " request_timeout 5s;\n request_timeout 6s;\n}\n",
	    "%s/sidecar.conf:4: \"request_timeout\" directive is duplicate",
	    t->dir);
	conf_test_err(t, "request_timeout 5s;\n",
	    "%s/sidecar.conf:1: \"request_timeout\" directive is not allowed "
	    "here", t->dir);
}

/*
 * new_order_exclusive on|off: off unless set (only Pebble 2.4.0 needs it),
 * per issuer, once, and only in an acme_issuer block.
 */
static void
test_conf_new_order_exclusive(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;

	conf = conf_test_ok(t, "acme_issuer a {\n uri https://a.test/;\n"
	    " new_order_exclusive on;\n}\nacme_issuer b {\n"
	    " uri https://b.test/;\n}\nacme_issuer c {\n"
	    " uri https://c.test/;\n new_order_exclusive off;\n}\n");
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_string_equal(ci->ci_name, "a");
	assert_true(ci->ci_new_order_exclusive);
	ci = TAILQ_NEXT(ci, ci_entry);
	assert_false(ci->ci_new_order_exclusive);
	ci = TAILQ_NEXT(ci, ci_entry);
	assert_false(ci->ci_new_order_exclusive);
	conf_free(conf);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " new_order_exclusive yes;\n}\n", "%s/sidecar.conf:3: invalid "
	    "value \"yes\" in \"new_order_exclusive\" directive, it must be "
	    "\"on\" or \"off\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " new_order_exclusive on;\n new_order_exclusive off;\n}\n",
	    "%s/sidecar.conf:4: \"new_order_exclusive\" directive is "
	    "duplicate", t->dir);
	conf_test_err(t, "\nnew_order_exclusive on;\n",
	    "%s/sidecar.conf:2: \"new_order_exclusive\" directive is not "
	    "allowed here", t->dir);
}

/*
 * group= as a gid: a pod's fsGroup, which may have no name in the
 * sidecar's image (main.c gives the zone that gid).
 */
static void
test_conf_zone_gid(void **state)
{
	static const char *bad[] = {
		"4294967295",			/* (gid_t)-1: "unchanged" */
		"99999999999999999999",		/* past unsigned long long */
		"-1", "12ab", "+33",
	};
	struct conf_test	*t = *state;
	struct conf		*conf;
	char			*text;
	size_t			 i;

	conf = conf_test_ok(t, "acme_shared_zone zone=z:1M group=4242 "
	    "owner=10001;");
	assert_string_equal(conf->c_zone_group, "4242");
	assert_string_equal(conf->c_zone_owner, "10001");
	conf_free(conf);
	conf = conf_test_nginx(t, "nginx.conf", "http {\n"
	    "    acme_shared_zone zone=n:1M group=0;\n}\n");
	assert_string_equal(conf->c_zone_group, "0");
	conf_free(conf);
	assert_int_equal(conf_gid("4242"), 4242);
	assert_int_equal(conf_gid("0"), 0);
	assert_int_equal(conf_gid("4294967294"), 4294967294U);
	assert_int_equal(conf_gid(""), (gid_t)-1);
	assert_int_equal(conf_gid("www-data"), (gid_t)-1);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(conf_gid(bad[i]), (gid_t)-1);
		xasprintf(&text, "\n\nacme_shared_zone zone=z:1M group=%s;",
		    bad[i]);
		conf_test_err(t, text, "%s/sidecar.conf:3: unknown group "
		    "\"%s\"", t->dir, bad[i]);
		free(text);
	}
}

/*
 * dns_check ADDR[:PORT]... | off: the servers dns-01's propagation check
 * asks (port 53 unless given), kept for the issuer's dns-01
 * certificates; its errors at its line.
 */
static void
test_conf_dns_check(void **state)
{
	struct conf_test	*t = *state;
	struct conf		*conf;
	struct conf_issuer	*ci;
	struct conf_cert	*cc;

	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " challenge dns-01;\n dns_hook /bin/true;\n"
	    " dns_check 127.0.0.1:5353 [::1] 192.0.2.1;\n}\n"
	    "acme_certificate le *.a.test;\n"
	    "acme_certificate le b.test challenge=http-01;\n");
	ci = TAILQ_FIRST(&conf->c_issuers);
	assert_string_equal(ci->ci_dns_check,
	    "127.0.0.1:5353 [::1]:53 192.0.2.1:53");
	cc = TAILQ_FIRST(&conf->c_certs);
	conf_cert_resolve(cc, ci);
	assert_string_equal(cc->cc_dns_check, ci->ci_dns_check);
	/* http-01 has no record to check. */
	cc = TAILQ_NEXT(cc, cc_entry);
	conf_cert_resolve(cc, ci);
	assert_null(cc->cc_dns_check);
	conf_free(conf);

	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " dns_check off;\n}\n");
	assert_string_equal(TAILQ_FIRST(&conf->c_issuers)->ci_dns_check,
	    "off");
	conf_free(conf);
	conf = conf_test_ok(t, "acme_issuer le {\n uri https://a.test/;\n}\n");
	assert_null(TAILQ_FIRST(&conf->c_issuers)->ci_dns_check);
	conf_free(conf);

	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " dns_check off 127.0.0.1;\n}\n",
	    "%s/sidecar.conf:3: invalid parameter \"127.0.0.1\" of "
	    "dns_check: \"off\" stands alone", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " dns_check 127.0.0.1 ns2.a.test;\n}\n",
	    "%s/sidecar.conf:3: dns_check \"ns2.a.test\": not an IP "
	    "address, with an optional :PORT, nor \"off\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " dns_check 127.0.0.1:0;\n}\n",
	    "%s/sidecar.conf:3: dns_check \"127.0.0.1:0\": not an IP "
	    "address, with an optional :PORT, nor \"off\"", t->dir);
	conf_test_err(t, "acme_issuer le {\n uri https://a.test/;\n"
	    " dns_check off;\n dns_check 127.0.0.1;\n}\n",
	    "%s/sidecar.conf:4: \"dns_check\" directive is duplicate",
	    t->dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, conf_test_setup, \
	conf_test_teardown)
		T(test_conf_full),
		T(test_conf_defaults),
		T(test_conf_lexer),
		T(test_conf_unknown_directive),
		T(test_conf_missing_semicolon),
		T(test_conf_blocks_and_arguments),
		T(test_conf_duplicate_directive),
		T(test_conf_bad_key_type),
		T(test_conf_key_types),
		T(test_conf_sizeless_key_types),
		T(test_conf_nginx_acme_04),
		T(test_conf_unknown_issuer),
		T(test_conf_duplicate_certificate),
		T(test_conf_duplicate_issuer),
		T(test_conf_shared_state_path),
		T(test_conf_no_identifiers),
		T(test_conf_wildcard),
		T(test_conf_dns01),
		T(test_conf_invalid_identifiers),
		T(test_conf_identifiers),
		T(test_conf_dot_expansion),
		T(test_conf_cert_id_suffix),
		T(test_conf_unterminated_quote),
		T(test_conf_include_glob),
		T(test_conf_include_depth),
		T(test_conf_include_files),
		T(test_conf_include_total),
		T(test_conf_limits),
		T(test_conf_request_rate),
		T(test_conf_challenge),
		T(test_conf_eab),
		T(test_conf_listen_and_zone),
		T(test_conf_lexer_nginx_words),
		T(test_conf_zone_params),
		T(test_nginx_seed_example),
		T(test_nginx_include_prefix),
		T(test_nginx_identifiers),
		T(test_nginx_errors),
		T(test_nginx_skips),
		T(test_nginx_merge),
		T(test_nginx_user),
		T(test_conf_control_group),
		T(test_conf_runtime_certs),
		T(test_conf_cluster),
		T(test_conf_challenge_check),
		T(test_nginx_check_listen),
		T(test_nginx_tls_check_listen),
		T(test_conf_dns_update),
		T(test_conf_dns_check),
		T(test_conf_request_timeout),
		T(test_conf_new_order_exclusive),
		T(test_conf_zone_gid),
#undef T
	};

	log_init(0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
