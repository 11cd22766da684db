/*
 * mapFd(fd, offset, length, writable): an ArrayBuffer over a MAP_SHARED mapping of an open file.
 *
 * Why native: guest RAM in a shared memory-backend-file (or an ELF dump) is read a few bytes at
 * a time along page-table walks and kernel lists; through pread each read is a system call
 * (~2 us here), through a mapping it is a memory access (~0.2 us). Node has no mmap of its own.
 * The mapping lives as long as the ArrayBuffer: V8 calls unmap() when it is collected.
 *
 * preadMany(fd, offsets, lengths, out): one pread per request, all from one call, into `out`
 * back to back; returns an Int32Array of bytes read per request (-errno on failure). Why: QEMU's
 * default anonymous RAM can only be read through /proc/<pid>/mem, and a walk over a thousand
 * tasks reads thousands of scattered pages; from JavaScript each read pays ~1-2 us of binding
 * overhead on top of the system call, from here only the system call.
 *
 * readProcess(pid, addresses, lengths, out): the same through process_vm_readv, up to IOV_MAX
 * requests a system call; a pread of /proc/<pid>/mem costs a few microseconds each (a page
 * allocated, the mm locked, per call), process_vm_readv a fraction of that per request. Needs
 * the same ptrace rights as opening /proc/<pid>/mem. A request that faults reports -EFAULT.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

static void unmap(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

static napi_value fail(napi_env env, const char *what) {
  napi_throw_error(env, "E_MAP", what);
  return NULL;
}

static napi_value map_fd(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  int64_t offset, length;
  bool writable;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok ||
      napi_get_value_bool(env, argv[3], &writable) != napi_ok || offset < 0 || length <= 0) {
    napi_throw_type_error(env, NULL, "mapFd(fd, offset, length, writable): bad arguments");
    return NULL;
  }
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *p = mmap(NULL, (size_t)length, prot, MAP_SHARED, fd, (off_t)offset);
  if (p == MAP_FAILED) return fail(env, strerror(errno));
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, (size_t)length, unmap, (void *)(uintptr_t)length, &ab) !=
      napi_ok) {
    munmap(p, (size_t)length);
    return fail(env, "this runtime does not allow external ArrayBuffers");
  }
  return ab;
}

/* Shared argument checks of the two batch readers: (int, Float64Array, Uint32Array, Buffer). */
static bool batch_args(napi_env env, napi_callback_info info, int32_t *id, const double **offsets,
                       const uint32_t **lengths, size_t *count, char **out) {
  size_t argc = 4;
  napi_value argv[4];
  napi_typedarray_type ot, lt;
  size_t on, ln, outLen;
  void *od, *ld, *outData;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[0], id) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &ot, &on, &od, NULL, NULL) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &lt, &ln, &ld, NULL, NULL) != napi_ok ||
      napi_get_buffer_info(env, argv[3], &outData, &outLen) != napi_ok || ot != napi_float64_array ||
      lt != napi_uint32_array || on != ln) {
    napi_throw_type_error(env, NULL, "(id, Float64Array, Uint32Array, Buffer): bad arguments");
    return false;
  }
  size_t total = 0;
  for (size_t i = 0; i < on; i++) total += ((const uint32_t *)ld)[i];
  if (total > outLen) {
    fail(env, "output buffer too small");
    return false;
  }
  *offsets = od;
  *lengths = ld;
  *count = on;
  *out = outData;
  return true;
}

/* An Int32Array of `count` results, or NULL with an exception pending. */
static napi_value result_array(napi_env env, size_t count, int32_t **got) {
  napi_value ab, result;
  void *data;
  if (napi_create_arraybuffer(env, count * sizeof(int32_t), &data, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_int32_array, count, ab, 0, &result) != napi_ok)
    return fail(env, "cannot allocate the result");
  *got = data;
  return result;
}

static napi_value pread_many(napi_env env, napi_callback_info info) {
  int32_t fd;
  const double *offsets;
  const uint32_t *lengths;
  size_t count;
  char *out;
  if (!batch_args(env, info, &fd, &offsets, &lengths, &count, &out)) return NULL;
  int32_t *got;
  napi_value result = result_array(env, count, &got);
  if (!result) return NULL;
  for (size_t i = 0; i < count; i++) {
    size_t done = 0;
    int err = 0;
    while (done < lengths[i]) {
      ssize_t n = pread(fd, out + done, lengths[i] - done, (off_t)offsets[i] + (off_t)done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : EIO;
        break;
      }
      done += (size_t)n;
    }
    /* A short read reports how far it got; only a read that got nothing reports the error. */
    got[i] = done > 0 || err == 0 ? (int32_t)done : -err;
    out += lengths[i];
  }
  return result;
}


static napi_value read_process(napi_env env, napi_callback_info info) {
  int32_t pid;
  const double *addrs;
  const uint32_t *lengths;
  size_t count;
  char *out;
  if (!batch_args(env, info, &pid, &addrs, &lengths, &count, &out)) return NULL;
  int32_t *got;
  napi_value result = result_array(env, count, &got);
  if (!result) return NULL;
  enum { BATCH = 1024 };
  struct iovec local[BATCH], remote[BATCH];
  size_t i = 0;
  char *at = out;
  while (i < count) {
    size_t n = count - i < BATCH ? count - i : BATCH;
    char *p = at;
    for (size_t k = 0; k < n; k++) {
      local[k].iov_base = p;
      local[k].iov_len = lengths[i + k];
      remote[k].iov_base = (void *)(uintptr_t)addrs[i + k];
      remote[k].iov_len = lengths[i + k];
      p += lengths[i + k];
    }
    ssize_t r = process_vm_readv(pid, local, n, remote, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EFAULT) {
      /* No right to read (or no such process): nothing here can be read, say so for all. */
      for (size_t k = i; k < count; k++) got[k] = -errno;
      return result;
    }
    /* Whole requests done, then the one that stopped the call (partial or faulting). */
    size_t done = r < 0 ? 0 : (size_t)r, k = 0;
    for (; k < n && done >= lengths[i + k]; k++) {
      got[i + k] = (int32_t)lengths[i + k];
      done -= lengths[i + k];
      at += lengths[i + k];
    }
    if (k < n) {
      got[i + k] = done > 0 ? (int32_t)done : -EFAULT;
      at += lengths[i + k];
      k++;
    }
    i += k;
  }
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn, many;
  if (napi_create_function(env, "mapFd", NAPI_AUTO_LENGTH, map_fd, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "mapFd", fn) != napi_ok ||
      napi_create_function(env, "preadMany", NAPI_AUTO_LENGTH, pread_many, NULL, &many) != napi_ok ||
      napi_set_named_property(env, exports, "preadMany", many) != napi_ok ||
      napi_create_function(env, "readProcess", NAPI_AUTO_LENGTH, read_process, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "readProcess", fn) != napi_ok)
    return NULL;
  return exports;
}
