/*
 * gyro-prep: turns real text into byte-level token shards (token = byte, vocab 256).
 *
 *   gyro-prep --out DIR --name CHANNEL [--max-bytes N] [--val-tokens N] [--shard-tokens N]
 *             [--seed S] [--ext .html,.h,.py] [--fortune PATH]... INPUT...
 *
 * Inputs are files or folders (recursed; in folders only names ending in one of --ext are
 * taken when --ext is given). Each file is one document, except fortune files (--fortune PATH,
 * repeatable), whose "%"-separated entries are one document each. Text extraction by type:
 * .html/.htm through libxml2's HTML parser (recover, no network; text nodes only, script and
 * style skipped, whitespace runs collapsed (a line break between two CJK characters vanishes),
 * block boundaries kept as "\n"); .gz/.dz through
 * zlib (the inner name decides html or plain); fortunes lose their ANSI colour escapes and
 * backspace overstrikes; everything else is plain UTF-8 text. Files that are not valid UTF-8
 * text (or hold NUL bytes) are binary and skipped.
 *
 * Invariants: the output is a pure function of the inputs' paths and bytes and of the options:
 * the file list is sorted by path (hard links and symlinks to one file count once), and the
 * held-out split is a hash of (path, document index, seed). Documents are joined by "\n\n".
 * A document whose FNV-1a hash % 10 == 0 goes to the held-out set while it is below
 * --val-tokens (default 205000: 200 sequences of 1024+1); the others fill the training text up
 * to --max-bytes (default 8 MiB), cut at a UTF-8 character boundary. Outputs are
 * DIR/CHANNEL/train_000.bin ... (--shard-tokens tokens each, default 10,000,000) and
 * DIR/CHANNEL/val.bin, written atomically; stale train shards of an earlier run are removed.
 * A one-line JSON summary (counts and the unigram entropy of the training bytes in nats) goes
 * to stdout. Exit status: 0 ok, 1 I/O or input error, 2 usage.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <zlib.h>

#include "worker/data.h"
#include "worker/shard.h"

#define EXIT_IO 1
#define EXIT_USAGE 2
#define MAX_FILE_BYTES (256u << 20)
#define MAX_DEPTH 64

/* ---- small growable buffers ---- */

typedef struct {
  char *p;
  size_t n, cap;
} buf_t;

static void die_oom(void) {
  fprintf(stderr, "gyro-prep: out of memory\n");
  exit(EXIT_IO);
}

static void buf_reserve(buf_t *b, size_t extra) {
  if (b->n + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->n + extra)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) die_oom();
  b->p = p;
  b->cap = cap;
}

static void buf_add(buf_t *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void buf_addc(buf_t *b, char c) {
  buf_reserve(b, 1);
  b->p[b->n++] = c;
}

static void buf_free(buf_t *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

/* ---- the file list ---- */

typedef struct {
  char *path;
  int fortune;
  dev_t dev;
  ino_t ino;
  int dup;
} entry_t;

typedef struct {
  entry_t *v;
  size_t n, cap;
} list_t;

typedef struct {
  char **ext; /* NULL-terminated suffixes, or NULL: take every file */
} filter_t;

static int has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

static void list_add(list_t *l, const char *path, int fortune, const struct stat *st) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    entry_t *v = realloc(l->v, cap * sizeof(entry_t));
    if (!v) die_oom();
    l->v = v;
    l->cap = cap;
  }
  entry_t *e = &l->v[l->n++];
  e->path = strdup(path);
  if (!e->path) die_oom();
  e->fortune = fortune;
  e->dev = st->st_dev;
  e->ino = st->st_ino;
  e->dup = 0;
}

static int walk(list_t *l, const char *path, int fortune, const filter_t *f, int depth, int top) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "gyro-prep: %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (S_ISREG(st.st_mode)) {
    if (!top) {
      if (fortune && has_suffix(path, ".dat")) return 0; /* strfile's index, not text */
      if (!fortune && f->ext) {
        int ok = 0;
        for (char **e = f->ext; *e && !ok; e++)
          ok = has_suffix(path, *e);
        if (!ok) return 0;
      }
    }
    list_add(l, path, fortune, &st);
    return 0;
  }
  if (!S_ISDIR(st.st_mode)) {
    if (top) fprintf(stderr, "gyro-prep: %s: not a file or folder, ignored\n", path);
    return 0;
  }
  if (depth >= MAX_DEPTH) {
    fprintf(stderr, "gyro-prep: %s: folders nested deeper than %d, not followed\n", path,
            MAX_DEPTH);
    return 0;
  }
  DIR *dir = opendir(path);
  if (!dir) {
    fprintf(stderr, "gyro-prep: %s: cannot open folder: %s\n", path, strerror(errno));
    return -1;
  }
  int rc = 0;
  struct dirent *de;
  while (rc == 0 && (de = readdir(dir))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    size_t n = strlen(path) + strlen(de->d_name) + 2;
    char *child = malloc(n);
    if (!child) die_oom();
    snprintf(child, n, "%s%s%s", path, has_suffix(path, "/") ? "" : "/", de->d_name);
    rc = walk(l, child, fortune, f, depth + 1, 0);
    free(child);
  }
  closedir(dir);
  return rc;
}

static int cmp_inode(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
  if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
  return strcmp(x->path, y->path);
}

static int cmp_path(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  return strcmp(x->path, y->path);
}

/* Sorts by path and drops all but the first path of each file (links, repeated inputs). */
static void list_finish(list_t *l) {
  if (l->n == 0) return;
  qsort(l->v, l->n, sizeof(entry_t), cmp_inode);
  for (size_t i = 1; i < l->n; i++)
    if (l->v[i].dev == l->v[i - 1].dev && l->v[i].ino == l->v[i - 1].ino) l->v[i].dup = 1;
  size_t k = 0;
  for (size_t i = 0; i < l->n; i++) {
    if (l->v[i].dup)
      free(l->v[i].path);
    else
      l->v[k++] = l->v[i];
  }
  l->n = k;
  qsort(l->v, l->n, sizeof(entry_t), cmp_path);
}

/* ---- reading and text checks ---- */

/* Reads a whole file; .gz/.dz through zlib. Returns 0, or -1 with a message printed. */
static int read_file(const char *path, buf_t *out) {
  out->n = 0;
  if (has_suffix(path, ".gz") || has_suffix(path, ".dz")) {
    gzFile g = gzopen(path, "rb");
    if (!g) {
      fprintf(stderr, "gyro-prep: %s: cannot open: %s\n", path, strerror(errno));
      return -1;
    }
    for (;;) {
      buf_reserve(out, 1 << 16);
      int k = gzread(g, out->p + out->n, 1 << 16);
      if (k < 0) {
        int zerr;
        const char *msg = gzerror(g, &zerr);
        fprintf(stderr, "gyro-prep: %s: cannot decompress: %s\n", path, msg);
        gzclose(g);
        return -1;
      }
      if (k == 0) break;
      out->n += (size_t)k;
      if (out->n > MAX_FILE_BYTES) {
        fprintf(stderr, "gyro-prep: %s: more than %u bytes uncompressed, only those kept\n", path,
                MAX_FILE_BYTES);
        out->n = MAX_FILE_BYTES;
        break;
      }
    }
    gzclose(g);
    return 0;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "gyro-prep: %s: cannot open: %s\n", path, strerror(errno));
    return -1;
  }
  for (;;) {
    buf_reserve(out, 1 << 16);
    size_t k = fread(out->p + out->n, 1, 1 << 16, f);
    out->n += k;
    if (k == 0) break;
    if (out->n > MAX_FILE_BYTES) {
      fprintf(stderr, "gyro-prep: %s: more than %u bytes, only those kept\n", path, MAX_FILE_BYTES);
      out->n = MAX_FILE_BYTES;
      break;
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    fprintf(stderr, "gyro-prep: %s: read error\n", path);
    return -1;
  }
  return 0;
}

/* Valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF) and no NUL byte.
 * A sequence cut by the MAX_FILE_BYTES cap at the very end is tolerated. */
static int is_utf8_text(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c == 0) return 0;
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return 0;
    }
    if (i + len > n) return n >= MAX_FILE_BYTES;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += len;
  }
  return 1;
}

/* ---- HTML text extraction ---- */

typedef struct {
  buf_t *out;
  int pending_space; /* a whitespace run is waiting to become one space */
  int pending_break; /* ... and it held a line break */
  int pending_nl;    /* a block boundary is waiting to become "\n" */
} htmltext_t;

static int is_block(const char *name) {
  static const char *const blocks[] = {
      "address", "article", "aside",  "blockquote", "body",     "br",         "caption",
      "dd",      "div",     "dl",     "dt",         "fieldset", "figcaption", "figure",
      "footer",  "form",    "h1",     "h2",         "h3",       "h4",         "h5",
      "h6",      "head",    "header", "hr",         "html",     "li",         "main",
      "nav",     "ol",      "p",      "pre",        "section",  "table",      "tbody",
      "tfoot",   "thead",   "title",  "tr",         "ul",       NULL};
  for (int i = 0; blocks[i]; i++)
    if (strcmp(name, blocks[i]) == 0) return 1;
  return 0;
}

/* Decodes the UTF-8 character at s (valid UTF-8: libxml2's output). */
static uint32_t utf8_at(const unsigned char *s) {
  if (s[0] < 0x80) return s[0];
  if (s[0] < 0xE0) return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
  if (s[0] < 0xF0)
    return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
         ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* East Asian wide characters (CJK ideographs, kana, fullwidth forms and punctuation;
 * Hangul is left out, as CSS does, because Korean separates words with spaces). */
static int is_wide(uint32_t c) {
  return (c >= 0x2E80 && c <= 0x303E) || (c >= 0x3041 && c <= 0x33FF) ||
         (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) ||
         (c >= 0xA000 && c <= 0xA4CF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFF60) ||
         (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x20000 && c <= 0x3FFFD);
}

/* Turns the pending whitespace into output before the character at next (NULL: none). A line
 * break between two wide characters is dropped, as browsers do (CSS Text 3 segment breaks):
 * Chinese source wrapped over lines must not gain spaces. */
static void flush_pending(htmltext_t *h, const char *next) {
  buf_t *o = h->out;
  if (o->n > 0) {
    if (h->pending_nl) {
      buf_addc(o, '\n');
    } else if (h->pending_space) {
      int drop = 0;
      if (h->pending_break && next) {
        size_t k = o->n - 1;
        while (k > 0 && ((unsigned char)o->p[k] & 0xC0) == 0x80)
          k--;
        drop = is_wide(utf8_at((const unsigned char *)o->p + k)) &&
               is_wide(utf8_at((const unsigned char *)next));
      }
      if (!drop) buf_addc(o, ' ');
    }
  }
  h->pending_nl = h->pending_space = h->pending_break = 0;
}

static void emit_text(htmltext_t *h, const char *s, int pre) {
  for (; *s; s++) {
    char c = *s;
    if (pre) {
      if (h->pending_nl || h->pending_space) flush_pending(h, NULL);
      if (c == '\n' && h->out->n == 0) continue;
      buf_addc(h->out, c);
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      h->pending_space = 1;
      if (c == '\n' || c == '\r') h->pending_break = 1;
    } else {
      if (h->pending_nl || h->pending_space) flush_pending(h, s);
      buf_addc(h->out, c);
    }
  }
}

static void html_walk(htmltext_t *h, xmlNode *node, int pre) {
  for (xmlNode *n = node; n; n = n->next) {
    if (n->type == XML_ELEMENT_NODE) {
      const char *name = (const char *)n->name;
      if (strcmp(name, "script") == 0 || strcmp(name, "style") == 0 ||
          strcmp(name, "noscript") == 0)
        continue;
      int block = is_block(name);
      if (block) h->pending_nl = 1;
      html_walk(h, n->children, pre || strcmp(name, "pre") == 0);
      if (block) h->pending_nl = 1;
    } else if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && n->content) {
      emit_text(h, (const char *)n->content, pre);
    }
  }
}

/* Extracts the text of an HTML document held in raw. Returns 0, or -1 if unparseable. */
static int html_text(const char *path, const buf_t *raw, buf_t *out) {
  out->n = 0;
  if (raw->n > (size_t)INT32_MAX) return -1;
  /* Bytes that are valid UTF-8 are read as UTF-8 whatever the page declares (pages without a
   * declaration would otherwise be read as Latin-1); others follow their declared charset. */
  const char *enc = is_utf8_text((const unsigned char *)raw->p, raw->n) ? "UTF-8" : NULL;
  int opts = HTML_PARSE_RECOVER | HTML_PARSE_NONET | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING;
  htmlDocPtr doc = htmlReadMemory(raw->p, (int)raw->n, path, enc, opts);
  if (!doc) return -1;
  htmltext_t h = {out, 0, 0, 0};
  html_walk(&h, xmlDocGetRootElement(doc), 0);
  xmlFreeDoc(doc);
  return 0;
}

/* ---- fortunes ---- */

/* Removes ANSI escape sequences (ESC [ params letter; a lone ESC and its next byte otherwise)
 * and backspace overstrikes ("_\bx" -> "x"), in place. Returns the new length. */
static size_t strip_terminal(char *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == 0x1B) {
      if (i + 1 < n && s[i + 1] == '[') {
        i += 2;
        while (i < n && !((unsigned char)s[i] >= 0x40 && (unsigned char)s[i] <= 0x7E))
          i++;
      } else if (i + 1 < n) {
        i++;
      }
      continue;
    }
    if (c == '\b') {
      /* Drop the previous character (all its UTF-8 bytes), but never past a line start. */
      if (o > 0 && s[o - 1] != '\n') {
        o--;
        while (o > 0 && ((unsigned char)s[o] & 0xC0) == 0x80)
          o--;
      }
      continue;
    }
    s[o++] = (char)c;
  }
  return o;
}

/* ---- the split and the output ---- */

typedef struct {
  const char *out_dir, *name;
  uint64_t max_bytes, val_tokens, shard_tokens, seed;
  buf_t train, val;
  uint64_t docs_train, docs_val, files, skipped;
} prep_t;

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static int full(const prep_t *p) {
  return p->train.n >= p->max_bytes && p->val.n >= p->val_tokens;
}

/* Appends text to b, after "\n\n" when b is not empty, keeping b within cap bytes and cutting
 * at a UTF-8 character boundary. Returns 1 if anything of text went in. */
static int append_capped(buf_t *b, uint64_t cap, const char *text, size_t n) {
  size_t sep = b->n ? 2 : 0;
  if (b->n + sep >= cap) return 0;
  size_t room = (size_t)(cap - b->n - sep);
  if (n > room) {
    n = room;
    while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
      n--;
    if (n == 0) return 0;
  }
  if (sep) buf_add(b, "\n\n", 2);
  buf_add(b, text, n);
  return 1;
}

static void add_document(prep_t *p, const char *path, uint64_t index, const char *text, size_t n) {
  /* Documents are trimmed of surrounding whitespace; empty ones are dropped. */
  while (n > 0 && (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r')) {
    text++;
    n--;
  }
  while (n > 0 &&
         (text[n - 1] == ' ' || text[n - 1] == '\n' || text[n - 1] == '\t' || text[n - 1] == '\r'))
    n--;
  if (n == 0) return;
  char num[48];
  int k = snprintf(num, sizeof(num), "#%" PRIu64 "#%" PRIu64, index, p->seed);
  uint64_t h = fnv1a(0xcbf29ce484222325ULL, path, strlen(path));
  h = fnv1a(h, num, (size_t)k);
  if (h % 10 == 0 && p->val.n < p->val_tokens) {
    if (append_capped(&p->val, p->val_tokens, text, n)) p->docs_val++;
  } else if (append_capped(&p->train, p->max_bytes, text, n)) {
    p->docs_train++;
  }
}

/* Splits a fortune file on lines that are exactly "%". */
static void add_fortunes(prep_t *p, const char *path, char *s, size_t n) {
  n = strip_terminal(s, n);
  uint64_t index = 0;
  size_t start = 0, i = 0;
  while (i <= n) {
    size_t eol = i;
    while (eol < n && s[eol] != '\n')
      eol++;
    size_t len = eol - i;
    if (len > 0 && s[eol - 1] == '\r') len--;
    int sep = (len == 1 && s[i] == '%');
    if (sep || eol >= n) {
      size_t end = sep ? i : n;
      add_document(p, path, index++, s + start, end - start);
      start = eol + 1;
    }
    if (eol >= n) break;
    i = eol + 1;
  }
}

static int process_file(prep_t *p, const entry_t *e, buf_t *raw, buf_t *text) {
  if (read_file(e->path, raw) != 0) return -1;
  const char *path = e->path;
  char inner[16] = "";
  /* The type of a compressed file is the type of the name without .gz/.dz. */
  size_t len = strlen(path);
  const char *name_end = path + len;
  if (has_suffix(path, ".gz") || has_suffix(path, ".dz")) name_end -= 3;
  for (const char *q = name_end; q > path && q[-1] != '/'; q--) {
    if (q[-1] == '.') {
      size_t m = (size_t)(name_end - q);
      if (m < sizeof(inner)) {
        memcpy(inner, q, m);
        inner[m] = '\0';
      }
      break;
    }
  }
  int html = !e->fortune && (strcmp(inner, "html") == 0 || strcmp(inner, "htm") == 0);
  if (html) {
    if (memchr(raw->p, '\0', raw->n) || html_text(path, raw, text) != 0) {
      fprintf(stderr, "gyro-prep: %s: not HTML text, skipped\n", path);
      p->skipped++;
      return 0;
    }
    p->files++;
    add_document(p, path, 0, text->p, text->n);
    return 0;
  }
  if (!is_utf8_text((const unsigned char *)raw->p, raw->n)) {
    fprintf(stderr, "gyro-prep: %s: not UTF-8 text (binary?), skipped\n", path);
    p->skipped++;
    return 0;
  }
  p->files++;
  if (e->fortune)
    add_fortunes(p, path, raw->p, raw->n);
  else
    add_document(p, path, 0, raw->p, raw->n);
  return 0;
}

static int mkdirs(const char *path) {
  char *tmp = strdup(path);
  if (!tmp) die_oom();
  for (char *q = tmp + 1;; q++) {
    if (*q == '/' || *q == '\0') {
      char save = *q;
      *q = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gyro-prep: cannot create folder %s: %s\n", tmp, strerror(errno));
        free(tmp);
        return -1;
      }
      *q = save;
      if (!save) break;
    }
  }
  free(tmp);
  return 0;
}

static int write_tokens(const char *path, const char *bytes, size_t n) {
  char err[512];
  uint16_t *tok = malloc((n ? n : 1) * sizeof(uint16_t));
  if (!tok) die_oom();
  for (size_t i = 0; i < n; i++)
    tok[i] = (unsigned char)bytes[i];
  int rc = gy_shard_write(path, tok, n, err, sizeof(err));
  free(tok);
  if (rc) {
    fprintf(stderr, "gyro-prep: %s\n", err);
    return -1;
  }
  return 0;
}

static int write_outputs(prep_t *p, int *nshards) {
  size_t dlen = strlen(p->out_dir) + strlen(p->name) + 32;
  char *dir = malloc(dlen), *file = malloc(dlen + 32);
  if (!dir || !file) die_oom();
  snprintf(dir, dlen, "%s/%s", p->out_dir, p->name);
  int rc = -1;
  if (mkdirs(dir) != 0) goto out;
  int k = 0;
  for (size_t off = 0; off < p->train.n; off += p->shard_tokens, k++) {
    size_t n = p->train.n - off < p->shard_tokens ? p->train.n - off : (size_t)p->shard_tokens;
    snprintf(file, dlen + 32, "%s/train_%03d.bin", dir, k);
    if (write_tokens(file, p->train.p + off, n) != 0) goto out;
  }
  *nshards = k;
  /* Shards beyond this run's count are left from a larger earlier run: remove them. */
  for (int s = k;; s++) {
    snprintf(file, dlen + 32, "%s/train_%03d.bin", dir, s);
    if (unlink(file) != 0) break;
  }
  snprintf(file, dlen + 32, "%s/val.bin", dir);
  if (write_tokens(file, p->val.p, p->val.n) != 0) goto out;
  rc = 0;
out:
  free(dir);
  free(file);
  return rc;
}

/* ---- the command line ---- */

static void usage(FILE *f) {
  fprintf(f, "usage: gyro-prep --out DIR --name CHANNEL [--max-bytes N] [--val-tokens N]\n"
             "                 [--shard-tokens N] [--seed S] [--ext .html,.h,.py]\n"
             "                 [--fortune PATH]... INPUT...\n"
             "Turns text files (plain, .html/.htm, .gz/.dz, fortune files) into byte-level\n"
             "llm.c token shards DIR/CHANNEL/train_NNN.bin and DIR/CHANNEL/val.bin.\n"
             "Sizes accept a k, M or G suffix (powers of 1024).\n");
}

static int parse_size(const char *opt, const char *s, uint64_t *out, int allow_zero) {
  char *end;
  errno = 0;
  if (!s || !*s || *s == '-') goto bad;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) goto bad;
  unsigned long long mul = 1;
  if (*end == 'k' || *end == 'K')
    mul = 1ULL << 10;
  else if (*end == 'M')
    mul = 1ULL << 20;
  else if (*end == 'G')
    mul = 1ULL << 30;
  if (mul != 1) end++;
  if (*end || v > UINT64_MAX / mul || (!allow_zero && v == 0)) goto bad;
  *out = v * mul;
  return 0;
bad:
  fprintf(stderr, "gyro-prep: %s: bad value '%s'\n", opt, s ? s : "");
  return -1;
}

int main(int argc, char **argv) {
  prep_t p = {0};
  filter_t filt = {NULL};
  list_t files = {0};
  char *ext_copy = NULL;
  char **fortunes = NULL;
  int nfortunes = 0, status = EXIT_IO;
  buf_t raw = {0}, text = {0};
  p.max_bytes = 8ULL << 20;
  p.val_tokens = 205000;
  p.shard_tokens = 10000000;

  static const struct option longopts[] = {{"out", required_argument, NULL, 'o'},
                                           {"name", required_argument, NULL, 'n'},
                                           {"max-bytes", required_argument, NULL, 'm'},
                                           {"val-tokens", required_argument, NULL, 'v'},
                                           {"shard-tokens", required_argument, NULL, 's'},
                                           {"seed", required_argument, NULL, 'S'},
                                           {"ext", required_argument, NULL, 'e'},
                                           {"fortune", required_argument, NULL, 'f'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int c;
  fortunes = calloc((size_t)argc, sizeof(char *));
  if (!fortunes) die_oom();
  while ((c = getopt_long(argc, argv, "o:n:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'o':
      p.out_dir = optarg;
      break;
    case 'n':
      p.name = optarg;
      break;
    case 'm':
      if (parse_size("--max-bytes", optarg, &p.max_bytes, 0)) goto usage_err;
      break;
    case 'v':
      if (parse_size("--val-tokens", optarg, &p.val_tokens, 1)) goto usage_err;
      break;
    case 's':
      if (parse_size("--shard-tokens", optarg, &p.shard_tokens, 0)) goto usage_err;
      if (p.shard_tokens > INT32_MAX) {
        fprintf(stderr, "gyro-prep: --shard-tokens: at most %d\n", INT32_MAX);
        goto usage_err;
      }
      break;
    case 'S':
      if (parse_size("--seed", optarg, &p.seed, 1)) goto usage_err;
      break;
    case 'e': {
      free(ext_copy);
      free(filt.ext);
      ext_copy = strdup(optarg);
      filt.ext = calloc(strlen(optarg) + 2, sizeof(char *));
      if (!ext_copy || !filt.ext) die_oom();
      int k = 0;
      for (char *tok = strtok(ext_copy, ","); tok; tok = strtok(NULL, ","))
        if (*tok) filt.ext[k++] = tok;
      if (k == 0) {
        fprintf(stderr, "gyro-prep: --ext: no suffix given\n");
        goto usage_err;
      }
      break;
    }
    case 'f':
      fortunes[nfortunes++] = optarg;
      break;
    case 'h':
      usage(stdout);
      status = 0;
      goto out;
    default:
      goto usage_err;
    }
  }
  if (!p.out_dir || !*p.out_dir || !p.name) {
    fprintf(stderr, "gyro-prep: --out and --name are required\n");
    goto usage_err;
  }
  if (!*p.name || strlen(p.name) >= GY_CHANNEL_NAME_MAX || strchr(p.name, '/') ||
      strcmp(p.name, ".") == 0 || strcmp(p.name, "..") == 0) {
    fprintf(stderr, "gyro-prep: --name '%s': a channel name is 1 to %d characters without '/'\n",
            p.name, GY_CHANNEL_NAME_MAX - 1);
    goto usage_err;
  }
  if (optind >= argc && nfortunes == 0) {
    fprintf(stderr, "gyro-prep: no INPUT given\n");
    goto usage_err;
  }

  for (int i = optind; i < argc; i++)
    if (walk(&files, argv[i], 0, &filt, 0, 1) != 0) goto out;
  for (int i = 0; i < nfortunes; i++)
    if (walk(&files, fortunes[i], 1, &filt, 0, 1) != 0) goto out;
  list_finish(&files);
  if (files.n == 0) {
    fprintf(stderr, "gyro-prep: no input files found\n");
    goto out;
  }

  LIBXML_TEST_VERSION;
  for (size_t i = 0; i < files.n && !full(&p); i++)
    if (process_file(&p, &files.v[i], &raw, &text) != 0) goto out;
  if (p.train.n == 0) {
    fprintf(stderr, "gyro-prep: channel '%s': no usable text in %zu file(s)\n", p.name, files.n);
    goto out;
  }
  if (p.val.n == 0 && p.val_tokens > 0)
    fprintf(stderr,
            "gyro-prep: channel '%s': no document went to the held-out set; val.bin is "
            "empty\n",
            p.name);
  int nshards = 0;
  if (write_outputs(&p, &nshards) != 0) goto out;

  /* The unigram entropy of the training bytes: the loss of the best context-free model. */
  uint64_t hist[256] = {0};
  for (size_t i = 0; i < p.train.n; i++)
    hist[(unsigned char)p.train.p[i]]++;
  double unigram = 0.0;
  for (int v = 0; v < 256; v++) {
    if (!hist[v]) continue;
    double q = (double)hist[v] / (double)p.train.n;
    unigram -= q * log(q);
  }
  json_t *sum = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:I, s:f}", "channel", p.name,
                          "documents", (json_int_t)(p.docs_train + p.docs_val), "train_documents",
                          (json_int_t)p.docs_train, "val_documents", (json_int_t)p.docs_val,
                          "train_tokens", (json_int_t)p.train.n, "val_tokens", (json_int_t)p.val.n,
                          "train_shards", nshards, "files", (json_int_t)p.files, "skipped_files",
                          (json_int_t)p.skipped, "unigram_nats", unigram);
  if (!sum) die_oom();
  char *line = json_dumps(sum, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(5));
  json_decref(sum);
  if (!line) die_oom();
  printf("%s\n", line);
  fflush(stdout);
  free(line);
  status = 0;
  goto out;

usage_err:
  usage(stderr);
  status = EXIT_USAGE;
out:
  for (size_t i = 0; i < files.n; i++)
    free(files.v[i].path);
  free(files.v);
  free(fortunes);
  free(filt.ext);
  free(ext_copy);
  buf_free(&raw);
  buf_free(&text);
  buf_free(&p.train);
  buf_free(&p.val);
  xmlCleanupParser();
  return status;
}
