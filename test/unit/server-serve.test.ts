/** The command line of `vmsight serve`: --listen and --vm forms, loopback by default. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseListen, parseVm } from "../../src/server/serve.js";

test("--listen takes HOST:PORT, [IPv6]:PORT, or a port on loopback", () => {
  assert.deepEqual(parseListen("127.0.0.1:7000"), { host: "127.0.0.1", port: 7000 });
  assert.deepEqual(parseListen("7000"), { host: "127.0.0.1", port: 7000 });
  assert.deepEqual(parseListen(":7000"), { host: "127.0.0.1", port: 7000 });
  assert.deepEqual(parseListen("[::1]:7000"), { host: "::1", port: 7000 });
  assert.deepEqual(parseListen("0.0.0.0:80"), { host: "0.0.0.0", port: 80 });
  for (const bad of ["", "host", "1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:x"]) {
    assert.throws(() => parseListen(bad), { code: "E_USAGE" }, bad);
  }
});

test("--vm takes NAME=QMP_SOCKET", () => {
  assert.deepEqual(parseVm("web=/run/web.sock"), { name: "web", qmp: "/run/web.sock" });
  assert.deepEqual(parseVm("a=b=c"), { name: "a", qmp: "b=c" });
  for (const bad of ["web", "=/x", "web="]) assert.throws(() => parseVm(bad), { code: "E_USAGE" }, bad);
});
