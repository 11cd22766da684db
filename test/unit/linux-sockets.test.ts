/** IPv6 addresses as sockets shows them: RFC 5952 text. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ipv6Text } from "../../src/os/linux/sockets.js";

const bytes = (groups: number[]) => {
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return b;
};

test("the longest run of two or more zero groups becomes ::, the first of equal runs", () => {
  const cases: [number[], string][] = [
    [[0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    [[0, 0, 0, 0, 0, 0, 0, 0], "::"],
    [[0xfe80, 0, 0, 0, 0, 0, 1, 2], "fe80::1:2"],
    [[0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], "2001:db8::1:0:0:1"],
    [[1, 0, 0, 2, 0, 0, 0, 3], "1:0:0:2::3"],
    [[1, 0, 2, 3, 4, 5, 6, 7], "1:0:2:3:4:5:6:7"],
    [[1, 2, 3, 4, 5, 6, 0, 0], "1:2:3:4:5:6::"],
  ];
  for (const [groups, text] of cases) assert.equal(ipv6Text(bytes(groups)), text);
});
