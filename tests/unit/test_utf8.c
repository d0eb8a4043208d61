/* test_utf8: common/utf8.h — well-formed sequences and their code points, and what is refused:
 * overlong forms, surrogates, code points past U+10FFFF, stray continuation bytes, a sequence cut
 * short; clean names refuse control characters. */
#include <string.h>

#include "common/utf8.h"
#include "tests/test.h"

static size_t seq(const char *s, uint32_t *cp) {
  return gy_utf8_seq((const unsigned char *)s, strlen(s), cp);
}

static void test_seq(void) {
  uint32_t cp = 0;
  CHECK(seq("A", &cp) == 1 && cp == 'A');
  CHECK(seq("\xc3\xa9", &cp) == 2 && cp == 0xe9);
  CHECK(seq("\xe6\x8e\xa7", &cp) == 3 && cp == 0x63a7);
  CHECK(seq("\xf0\x9f\x98\x80", &cp) == 4 && cp == 0x1f600);
  CHECK(seq("\xc0\xaf", NULL) == 0);         /* overlong */
  CHECK(seq("\xe0\x80\xaf", NULL) == 0);     /* overlong */
  CHECK(seq("\xed\xa0\x80", NULL) == 0);     /* a surrogate */
  CHECK(seq("\xf4\x90\x80\x80", NULL) == 0); /* past U+10FFFF */
  CHECK(seq("\x80", NULL) == 0);             /* a stray continuation byte */
  CHECK(seq("\xe6\x8e", NULL) == 0);         /* cut short */
  CHECK(gy_utf8_seq((const unsigned char *)"", 0, NULL) == 0);
}

static void test_clean(void) {
  CHECK(gy_utf8_clean("worker-0 控制器", strlen("worker-0 控制器")));
  CHECK(!gy_utf8_clean("a\tb", 3));
  CHECK(!gy_utf8_clean("a\x7f", 2));
  CHECK(!gy_utf8_clean("\xff", 1));
  CHECK(gy_utf8_clean("", 0));
}

int main(void) {
  RUN(test_seq);
  RUN(test_clean);
  GY_TEST_END();
}
