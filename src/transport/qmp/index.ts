export {
  MAX_LINE_BYTES,
  NOT_QMP,
  type QemuVersion,
  type QmpEvent,
  type QmpFrame,
  type QmpGreeting,
  type QmpMessage,
  type QmpTimestamp,
  QmpDecoder,
  classify,
  encodeCommand,
} from "./codec.js";
export {
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  QmpClient,
  type QmpConnectOptions,
  type QmpExecuteOptions,
  type QmpRecorder,
} from "./client.js";
export { CLOSED, COMMAND, CONNECT, QmpCommandError, TIMEOUT } from "./failures.js";
