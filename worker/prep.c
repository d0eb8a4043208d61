/*
 * gyro-prep: turns real text into byte-level token shards (token = byte, vocab 256).
 *
 *   gyro-prep --out DIR --name CHANNEL [--max-bytes N] [--val-tokens N] [--shard-tokens N]
 *             [--seed S] [--ext .html,.h,.py] [--fortune PATH]... [filter options] INPUT...
 *
 * Inputs are files or folders (recursed; in folders only names ending in one of --ext are
 * taken when --ext is given). Each file is one document, except fortune files (--fortune PATH,
 * repeatable), whose "%"-separated entries are one document each. Text extraction by type:
 * .html/.htm through libxml2's HTML parser (recover, no network; text nodes only, script and
 * style skipped, whitespace runs collapsed (a line break between two CJK characters vanishes),
 * block boundaries kept as "\n"); .gz/.dz through zlib (the inner name decides html or plain);
 * fortunes lose their ANSI colour escapes and backspace overstrikes; everything else is plain
 * text. A file holding a NUL byte is binary and skipped whole.
 *
 * Then the documents are filtered (worker/prep_filter.h, the rules; worker/prep_report.h, the
 * report): every document's lines are counted per input (each command-line INPUT is a group);
 * then, in order, each document loses its boilerplate lines and is judged (non-text, repeated
 * spans, exact and near duplicates of a document kept earlier). What was dropped and why goes to
 * DIR/CHANNEL/prep_report.json and, as counts, to the summary line.
 *
 * Invariants: the output is a pure function of the inputs' paths and bytes and of the options:
 * the file list is sorted by path (hard links and symlinks to one file count once), the filters
 * are deterministic, and the held-out split is a hash of (path, document index, seed). Documents
 * are joined by "\n\n". A kept document whose FNV-1a hash % 10 == 0 goes to the held-out set
 * while it is below --val-tokens (default 205000: 200 sequences of 1024+1); the others fill the
 * training text up to --max-bytes (default 8 MiB), cut at a UTF-8 character boundary; documents
 * after that are not judged. Outputs are DIR/CHANNEL/train_000.bin ... (--shard-tokens tokens
 * each, default 10,000,000), beside each its document index train_000.docs ...
 * (worker/docindex.h: where each document starts in the shard, with the shard's token count and
 * CRC-32C), DIR/CHANNEL/val.bin and DIR/CHANNEL/prep_report.json, written atomically; stale train
 * shards and indexes of an earlier run are removed. Documents are numbered 0, 1, 2, ... in the
 * order they enter the training text; the "\n\n" joining two belongs to the one before. A one-line
 * JSON summary (counts, the unigram entropy of the training bytes in nats, the filters' counts)
 * goes to stdout. Exit status: 0 ok, 1 I/O or input error, 2 usage.
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

#include "common/fsutil.h"
#include "worker/data.h"
#include "worker/docindex.h"
#include "worker/prep_filter.h"
#include "worker/prep_report.h"
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
  uint32_t group; /* the command-line input it came from: boilerplate is counted per group */
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

static void list_add(list_t *l, const char *path, int fortune, uint32_t group,
                     const struct stat *st) {
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
  e->group = group;
  e->dev = st->st_dev;
  e->ino = st->st_ino;
  e->dup = 0;
}

static int walk(list_t *l, const char *path, int fortune, uint32_t group, const filter_t *f,
                int depth, int top) {
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
    list_add(l, path, fortune, group, &st);
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
    rc = walk(l, child, fortune, group, f, depth + 1, 0);
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

/* A file cut at MAX_FILE_BYTES may end inside a UTF-8 character: drop that character's bytes,
 * so that the cut does not make the text look binary. */
static void cut_partial_char(buf_t *b) {
  size_t k = b->n;
  while (k > 0 && b->n - k < 3 && ((unsigned char)b->p[k - 1] & 0xC0) == 0x80)
    k--;
  if (k == 0) return;
  unsigned c = (unsigned char)b->p[k - 1];
  size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  if (b->n - (k - 1) < want) b->n = k - 1;
}

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
        cut_partial_char(out);
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
      cut_partial_char(out);
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
        drop = gy_prep_is_wide(utf8_at((const unsigned char *)o->p + k)) &&
               gy_prep_is_wide(utf8_at((const unsigned char *)next));
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
  const char *enc = gy_prep_is_utf8(raw->p, raw->n) ? "UTF-8" : NULL;
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

/* ---- the documents ---- */

typedef struct {
  uint32_t file;   /* index in the file list */
  uint64_t index;  /* in its file: the fortune's number, else 0 */
  size_t off, len; /* bytes of prep_t.all */
} doc_t;

typedef struct {
  const char *out_dir, *name;
  uint64_t max_bytes, val_tokens, shard_tokens, seed;
  const list_t *files;
  buf_t all; /* the text of every document read, in order */
  doc_t *docs;
  size_t ndocs, capdocs;
  gy_prep_filter_t *filter;
  gy_prep_report_t *report;
  buf_t train, val;
  uint64_t *train_starts; /* where each training document starts in train: the document index */
  size_t ntrain_starts, cap_train_starts;
  uint64_t docs_train, docs_val, files_read, skipped;
} prep_t;

/* Keeps a document's text (trimmed of surrounding whitespace; an empty one is dropped). */
static void store_document(prep_t *p, uint32_t file, uint64_t index, const char *text, size_t n) {
  while (n > 0 && (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r')) {
    text++;
    n--;
  }
  while (n > 0 &&
         (text[n - 1] == ' ' || text[n - 1] == '\n' || text[n - 1] == '\t' || text[n - 1] == '\r'))
    n--;
  if (n == 0) return;
  if (p->ndocs == p->capdocs) {
    size_t cap = p->capdocs ? p->capdocs * 2 : 1024;
    doc_t *d = realloc(p->docs, cap * sizeof(doc_t));
    if (!d) die_oom();
    p->docs = d;
    p->capdocs = cap;
  }
  doc_t *d = &p->docs[p->ndocs++];
  d->file = file;
  d->index = index;
  d->off = p->all.n;
  d->len = n;
  buf_add(&p->all, text, n);
}

/* Splits a fortune file on lines that are exactly "%". */
static void add_fortunes(prep_t *p, uint32_t file, char *s, size_t n) {
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
      store_document(p, file, index++, s + start, end - start);
      start = eol + 1;
    }
    if (eol >= n) break;
    i = eol + 1;
  }
}

/* Skips a whole file: named on stderr and counted under "nontext" in the report. */
static void skip_file(prep_t *p, const char *path, const char *why, const buf_t *raw) {
  fprintf(stderr, "gyro-prep: %s: %s, skipped\n", path, why);
  p->skipped++;
  if (gy_prep_report_file(p->report, path, why, raw->p, raw->n) != 0) die_oom();
}

/* Reads file number fi and keeps its documents. */
static int read_documents(prep_t *p, uint32_t fi, buf_t *raw, buf_t *text) {
  const entry_t *e = &p->files->v[fi];
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
  /* A NUL byte marks a binary file; other bad bytes are judged per document (nontext). */
  if (memchr(raw->p, '\0', raw->n)) {
    skip_file(p, path, "NUL bytes: not text (binary?)", raw);
    return 0;
  }
  int html = !e->fortune && (strcmp(inner, "html") == 0 || strcmp(inner, "htm") == 0);
  if (html) {
    if (html_text(path, raw, text) != 0) {
      skip_file(p, path, "not HTML text", raw);
      return 0;
    }
    p->files_read++;
    store_document(p, fi, 0, text->p, text->n);
    return 0;
  }
  p->files_read++;
  if (e->fortune)
    add_fortunes(p, fi, raw->p, raw->n);
  else
    store_document(p, fi, 0, raw->p, raw->n);
  return 0;
}

/* ---- the filters and the split ---- */

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

static void split_document(prep_t *p, const char *path, uint64_t index, const char *text,
                           size_t n) {
  char num[48];
  int k = snprintf(num, sizeof(num), "#%" PRIu64 "#%" PRIu64, index, p->seed);
  uint64_t h = fnv1a(0xcbf29ce484222325ULL, path, strlen(path));
  h = fnv1a(h, num, (size_t)k);
  if (h % 10 == 0 && p->val.n < p->val_tokens) {
    if (append_capped(&p->val, p->val_tokens, text, n)) p->docs_val++;
  } else {
    /* The document starts after the joiner, which belongs to the document before it. */
    uint64_t start = p->train.n ? p->train.n + 2 : 0;
    if (!append_capped(&p->train, p->max_bytes, text, n)) return;
    if (p->ntrain_starts == p->cap_train_starts) {
      size_t cap = p->cap_train_starts ? p->cap_train_starts * 2 : 1024;
      uint64_t *v = realloc(p->train_starts, cap * sizeof(uint64_t));
      if (!v) die_oom();
      p->train_starts = v;
      p->cap_train_starts = cap;
    }
    p->train_starts[p->ntrain_starts++] = start;
    p->docs_train++;
  }
}

typedef struct {
  prep_t *p;
  const doc_t *d;
} line_ctx_t;

static void on_boilerplate(void *ud, const char *line, size_t n, uint32_t docs) {
  line_ctx_t *c = ud;
  const char *path = c->p->files->v[c->d->file].path;
  if (gy_prep_report_line(c->p->report, path, (int64_t)c->d->index, line, n, docs) != 0) die_oom();
}

/* Round one: every document's lines are counted, for the boilerplate rule. Round two, in order
 * until the text is full: boilerplate lines go, the document is judged, and a kept one is split
 * between training and held-out text. */
static void filter_and_split(prep_t *p) {
  for (size_t i = 0; i < p->ndocs; i++) {
    const doc_t *d = &p->docs[i];
    if (gy_prep_filter_count(p->filter, p->files->v[d->file].group, p->all.p + d->off, d->len))
      die_oom();
  }
  for (size_t i = 0; i < p->ndocs && !full(p); i++) {
    doc_t *d = &p->docs[i];
    const entry_t *e = &p->files->v[d->file];
    char *t = p->all.p + d->off;
    line_ctx_t ctx = {p, d};
    size_t lines = 0;
    size_t n = gy_prep_filter_strip(p->filter, e->group, t, d->len, &lines, on_boilerplate, &ctx);
    gy_prep_report_line_doc(p->report, lines > 0);
    while (n > 0 && (*t == ' ' || *t == '\n' || *t == '\t' || *t == '\r')) {
      t++;
      n--;
    }
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\n' || t[n - 1] == '\t' || t[n - 1] == '\r'))
      n--;
    gy_prep_verdict_t v;
    if (gy_prep_filter_judge(p->filter, i, t, n, &v) != 0) die_oom();
    const char *dup_file = NULL;
    int64_t dup_doc = 0;
    if (v.rule == GY_PREP_EXACT_DUP || v.rule == GY_PREP_NEAR_DUP) {
      const doc_t *o = &p->docs[v.dup_of];
      dup_file = p->files->v[o->file].path;
      dup_doc = (int64_t)o->index;
    }
    if (gy_prep_report_doc(p->report, e->path, (int64_t)d->index, t, n, &v, dup_file, dup_doc))
      die_oom();
    if (v.rule == GY_PREP_KEEP) split_document(p, e->path, d->index, t, n);
  }
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

/* Writes bytes as a shard of byte tokens; *crc (when not NULL) gets their CRC for the index. */
static int write_tokens(const char *path, const char *bytes, size_t n, uint32_t *crc) {
  char err[512];
  uint16_t *tok = malloc((n ? n : 1) * sizeof(uint16_t));
  if (!tok) die_oom();
  for (size_t i = 0; i < n; i++)
    tok[i] = (unsigned char)bytes[i];
  int rc = gy_shard_write(path, tok, n, err, sizeof(err));
  if (crc) *crc = gy_docindex_crc(tok, n);
  free(tok);
  if (rc) {
    fprintf(stderr, "gyro-prep: %s\n", err);
    return -1;
  }
  return 0;
}

/* The report of what the filters dropped, pretty-printed, replaced atomically. */
static int write_report(const prep_t *p, const char *path) {
  json_t *j = gy_prep_report_json(p->report);
  if (!j) die_oom();
  char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(5));
  json_decref(j);
  if (!text) die_oom();
  struct iovec iov[2] = {{text, strlen(text)}, {"\n", 1}};
  char err[512];
  int rc = gy_write_file_atomic(path, iov, 2, err, sizeof(err));
  free(text);
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
    uint32_t crc;
    snprintf(file, dlen + 32, "%s/train_%03d.bin", dir, k);
    if (write_tokens(file, p->train.p + off, n, &crc) != 0) goto out;
    /* The index goes after its shard: a crash between the two leaves an index of an earlier
     * run, which the loader finds stale by its CRC. */
    gy_docindex_t ix;
    if (gy_docindex_build(&ix, p->train_starts, p->ntrain_starts, off, n) != 0) die_oom();
    ix.crc = crc;
    snprintf(file, dlen + 32, "%s/train_%03d.docs", dir, k);
    char err[512];
    int wrc = gy_docindex_write(file, &ix, err, sizeof(err));
    gy_docindex_free(&ix);
    if (wrc != 0) {
      fprintf(stderr, "gyro-prep: %s\n", err);
      goto out;
    }
  }
  *nshards = k;
  /* Shards and indexes beyond this run's count are left from a larger earlier run: remove
   * them (an index without its shard too, as an earlier run may have stopped between them). */
  for (int s = k;; s++) {
    snprintf(file, dlen + 32, "%s/train_%03d.bin", dir, s);
    int had_shard = unlink(file) == 0;
    snprintf(file, dlen + 32, "%s/train_%03d.docs", dir, s);
    int had_index = unlink(file) == 0;
    if (!had_shard && !had_index) break;
  }
  snprintf(file, dlen + 32, "%s/val.bin", dir);
  if (write_tokens(file, p->val.p, p->val.n, NULL) != 0) goto out;
  snprintf(file, dlen + 32, "%s/prep_report.json", dir);
  if (write_report(p, file) != 0) goto out;
  rc = 0;
out:
  free(dir);
  free(file);
  return rc;
}

/* ---- the command line ---- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: gyro-prep --out DIR --name CHANNEL [--max-bytes N] [--val-tokens N]\n"
          "                 [--shard-tokens N] [--seed S] [--ext .html,.h,.py]\n"
          "                 [--fortune PATH]... [filter options] INPUT...\n"
          "Turns text files (plain, .html/.htm, .gz/.dz, fortune files) into byte-level\n"
          "llm.c token shards DIR/CHANNEL/train_NNN.bin and DIR/CHANNEL/val.bin, and writes\n"
          "DIR/CHANNEL/train_NNN.docs (where each document starts in the shard) and\n"
          "DIR/CHANNEL/prep_report.json (what the filters dropped and why).\n"
          "Sizes accept a k, M or G suffix (powers of 1024).\n"
          "Filters (defaults in brackets; data/README.md describes them):\n"
          "  --nontext-max F            drop documents with more than this share of invalid\n"
          "                             UTF-8 or control bytes [0]; a NUL skips the file\n"
          "  --rep-max-times N          drop documents where a span of tokens repeats N times\n"
          "                             in a row [32]; 0: off\n"
          "  --rep-min-period N, --rep-max-period N   that span's length in tokens [1, 13]\n"
          "  --exact-dedup 0|1          drop exact duplicates (normalised text) [1]\n"
          "  --near-threshold F         drop near duplicates: MinHash Jaccard >= F [0.8]; 0: off\n"
          "  --shingle N                tokens per shingle [5]\n"
          "  --minhash-bands N, --minhash-rows N      LSH bands and rows per band [16, 8]\n"
          "  --boilerplate-min-docs N   remove lines found in N documents or more of one input\n"
          "                             [10]; 0: off\n"
          "  --boilerplate-min-share F  ... and in at least this share of them [0.5]\n"
          "  --boilerplate-min-bytes N  shorter lines are never boilerplate [4]\n"
          "  --no-filter                every rule off\n"
          "  --report-examples N        examples per rule in the report [5]\n");
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

/* A whole number within [lo, hi]. */
static int parse_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi, uint32_t *out) {
  uint64_t v;
  if (parse_size(opt, s, &v, 1) != 0) return -1;
  if (v < lo || v > hi) {
    fprintf(stderr, "gyro-prep: %s: %s is not within [%u, %u]\n", opt, s, lo, hi);
    return -1;
  }
  *out = (uint32_t)v;
  return 0;
}

/* A real number within [0, 1]. */
static int parse_share(const char *opt, const char *s, double *out) {
  char *end;
  errno = 0;
  double v = s && *s ? strtod(s, &end) : -1.0;
  if (!s || !*s || errno || *end || !(v >= 0.0 && v <= 1.0)) {
    fprintf(stderr, "gyro-prep: %s: bad value '%s' (a number within [0, 1])\n", opt, s ? s : "");
    return -1;
  }
  *out = v;
  return 0;
}

enum {
  OPT_NONTEXT = 256,
  OPT_REP_TIMES,
  OPT_REP_MIN,
  OPT_REP_MAX,
  OPT_EXACT,
  OPT_NEAR,
  OPT_SHINGLE,
  OPT_BANDS,
  OPT_ROWS,
  OPT_BP_DOCS,
  OPT_BP_SHARE,
  OPT_BP_BYTES,
  OPT_NO_FILTER,
  OPT_EXAMPLES
};

int main(int argc, char **argv) {
  prep_t p = {0};
  filter_t filt = {NULL};
  list_t files = {0};
  char *ext_copy = NULL;
  char **fortunes = NULL;
  int nfortunes = 0, status = EXIT_IO;
  buf_t raw = {0}, text = {0};
  gy_prep_filter_opts_t fo;
  uint32_t examples = 5, exact = 1;
  gy_prep_filter_opts_default(&fo);
  p.max_bytes = 8ULL << 20;
  p.val_tokens = 205000;
  p.shard_tokens = 10000000;

  static const struct option longopts[] = {
      {"out", required_argument, NULL, 'o'},
      {"name", required_argument, NULL, 'n'},
      {"max-bytes", required_argument, NULL, 'm'},
      {"val-tokens", required_argument, NULL, 'v'},
      {"shard-tokens", required_argument, NULL, 's'},
      {"seed", required_argument, NULL, 'S'},
      {"ext", required_argument, NULL, 'e'},
      {"fortune", required_argument, NULL, 'f'},
      {"nontext-max", required_argument, NULL, OPT_NONTEXT},
      {"rep-max-times", required_argument, NULL, OPT_REP_TIMES},
      {"rep-min-period", required_argument, NULL, OPT_REP_MIN},
      {"rep-max-period", required_argument, NULL, OPT_REP_MAX},
      {"exact-dedup", required_argument, NULL, OPT_EXACT},
      {"near-threshold", required_argument, NULL, OPT_NEAR},
      {"shingle", required_argument, NULL, OPT_SHINGLE},
      {"minhash-bands", required_argument, NULL, OPT_BANDS},
      {"minhash-rows", required_argument, NULL, OPT_ROWS},
      {"boilerplate-min-docs", required_argument, NULL, OPT_BP_DOCS},
      {"boilerplate-min-share", required_argument, NULL, OPT_BP_SHARE},
      {"boilerplate-min-bytes", required_argument, NULL, OPT_BP_BYTES},
      {"no-filter", no_argument, NULL, OPT_NO_FILTER},
      {"report-examples", required_argument, NULL, OPT_EXAMPLES},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int c;
  fortunes = calloc((size_t)argc, sizeof(char *));
  if (!fortunes) die_oom();
  while ((c = getopt_long(argc, argv, "o:n:h", longopts, NULL)) != -1) {
    int bad = 0;
    switch (c) {
    case 'o':
      p.out_dir = optarg;
      break;
    case 'n':
      p.name = optarg;
      break;
    case 'm':
      bad = parse_size("--max-bytes", optarg, &p.max_bytes, 0);
      break;
    case 'v':
      bad = parse_size("--val-tokens", optarg, &p.val_tokens, 1);
      break;
    case 's':
      bad = parse_size("--shard-tokens", optarg, &p.shard_tokens, 0);
      if (!bad && p.shard_tokens > INT32_MAX) {
        fprintf(stderr, "gyro-prep: --shard-tokens: at most %d\n", INT32_MAX);
        bad = 1;
      }
      break;
    case 'S':
      bad = parse_size("--seed", optarg, &p.seed, 1);
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
        bad = 1;
      }
      break;
    }
    case 'f':
      fortunes[nfortunes++] = optarg;
      break;
    case OPT_NONTEXT:
      bad = parse_share("--nontext-max", optarg, &fo.nontext_max);
      break;
    case OPT_REP_TIMES:
      bad = parse_u32("--rep-max-times", optarg, 0, UINT32_MAX, &fo.rep_max_times);
      break;
    case OPT_REP_MIN:
      bad = parse_u32("--rep-min-period", optarg, 1, 1024, &fo.rep_min_period);
      break;
    case OPT_REP_MAX:
      bad = parse_u32("--rep-max-period", optarg, 1, 1024, &fo.rep_max_period);
      break;
    case OPT_EXACT:
      bad = parse_u32("--exact-dedup", optarg, 0, 1, &exact);
      fo.exact_dedup = (int)exact;
      break;
    case OPT_NEAR:
      bad = parse_share("--near-threshold", optarg, &fo.near_threshold);
      break;
    case OPT_SHINGLE:
      bad = parse_u32("--shingle", optarg, 1, 64, &fo.shingle);
      break;
    case OPT_BANDS:
      bad = parse_u32("--minhash-bands", optarg, 1, GY_PREP_MINHASH_MAX, &fo.bands);
      break;
    case OPT_ROWS:
      bad = parse_u32("--minhash-rows", optarg, 1, GY_PREP_MINHASH_MAX, &fo.rows);
      break;
    case OPT_BP_DOCS:
      bad = parse_u32("--boilerplate-min-docs", optarg, 0, UINT32_MAX, &fo.boiler_min_docs);
      break;
    case OPT_BP_SHARE:
      bad = parse_share("--boilerplate-min-share", optarg, &fo.boiler_min_share);
      break;
    case OPT_BP_BYTES:
      bad = parse_u32("--boilerplate-min-bytes", optarg, 0, UINT32_MAX, &fo.boiler_min_bytes);
      break;
    case OPT_NO_FILTER:
      fo.nontext_max = 1.0;
      fo.rep_max_times = 0;
      fo.exact_dedup = 0;
      fo.near_threshold = 0.0;
      fo.boiler_min_docs = 0;
      break;
    case OPT_EXAMPLES:
      bad = parse_u32("--report-examples", optarg, 0, 1000, &examples);
      break;
    case 'h':
      usage(stdout);
      status = 0;
      goto out;
    default:
      bad = 1;
    }
    if (bad) goto usage_err;
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
  char ferr[256];
  if (gy_prep_filter_opts_check(&fo, ferr, sizeof(ferr)) != 0) {
    fprintf(stderr, "gyro-prep: filter options: %s\n", ferr);
    goto usage_err;
  }
  if (optind >= argc && nfortunes == 0) {
    fprintf(stderr, "gyro-prep: no INPUT given\n");
    goto usage_err;
  }

  /* Each command-line input is a group of its own for the boilerplate rule. */
  uint32_t group = 0;
  for (int i = optind; i < argc; i++)
    if (walk(&files, argv[i], 0, group++, &filt, 0, 1) != 0) goto out;
  for (int i = 0; i < nfortunes; i++)
    if (walk(&files, fortunes[i], 1, group++, &filt, 0, 1) != 0) goto out;
  list_finish(&files);
  if (files.n == 0) {
    fprintf(stderr, "gyro-prep: no input files found\n");
    goto out;
  }
  if (files.n > UINT32_MAX) {
    fprintf(stderr, "gyro-prep: too many input files\n");
    goto out;
  }
  p.files = &files;
  if (gy_prep_filter_create(&p.filter, &fo) != 0) die_oom();
  p.report = gy_prep_report_create(p.name, examples, &fo);
  if (!p.report) die_oom();

  LIBXML_TEST_VERSION;
  for (size_t i = 0; i < files.n; i++)
    if (read_documents(&p, (uint32_t)i, &raw, &text) != 0) goto out;
  filter_and_split(&p);
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
  json_t *filtered = gy_prep_report_summary(p.report);
  if (!filtered) die_oom();
  json_t *sum = json_pack(
      "{s:s, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:I, s:f, s:o}", "channel", p.name, "documents",
      (json_int_t)(p.docs_train + p.docs_val), "train_documents", (json_int_t)p.docs_train,
      "val_documents", (json_int_t)p.docs_val, "train_tokens", (json_int_t)p.train.n, "val_tokens",
      (json_int_t)p.val.n, "train_shards", nshards, "files", (json_int_t)p.files_read,
      "skipped_files", (json_int_t)p.skipped, "unigram_nats", unigram, "filtered", filtered);
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
  buf_free(&p.all);
  free(p.docs);
  free(p.train_starts);
  buf_free(&p.train);
  buf_free(&p.val);
  gy_prep_filter_destroy(p.filter);
  gy_prep_report_destroy(p.report);
  xmlCleanupParser();
  return status;
}
