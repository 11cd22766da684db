export { Btf, BtfStrings } from "./btf.js";
export { type MemberInfo, TypeDb } from "./db.js";
export { btfFromElfFile } from "./file.js";
export { type BtfHeader, parseBtf, parseBtfHeader } from "./parse.js";
export { type PathSegment, parseMemberPath } from "./path.js";
export { MAX_TYPE_DEPTH, POINTER_SIZE, resolveType, sizeOfType, typeName } from "./resolve.js";
export * from "./types.js";
