/**
 * The loopback Hugging Face Hub of the tests in a process of its own, serving a model folder
 * given on the command line as `bench/pull-model`; prints its address, then serves until killed.
 */
import { repoFromFolder, startHub } from '../test/support/hub-server.js';

const hub = await startHub([repoFromFolder('bench/pull-model', process.argv[2]!)]);
console.log(hub.url);
