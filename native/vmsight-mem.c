/*
 * mapFd(fd, offset, length, writable): an ArrayBuffer over a MAP_SHARED mapping of an open file.
 *
 * Why native: guest RAM in a shared memory-backend-file (or an ELF dump) is read a few bytes at
 * a time along page-table walks and kernel lists; through pread each read is a system call
 * (~2 us here), through a mapping it is a memory access (~0.2 us). Node has no mmap of its own.
 * The mapping lives as long as the ArrayBuffer: V8 calls unmap() when it is collected.
 */
#define NAPI_VERSION 8
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

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

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "mapFd", NAPI_AUTO_LENGTH, map_fd, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "mapFd", fn) != napi_ok)
    return NULL;
  return exports;
}
