// The tests run engine commands as the server does.
export { type EngineEvent, runEngineCommand as runEngine } from '../../src/engine/engine-command.js';
export { ofType } from '../../src/engine/protocol.js';
