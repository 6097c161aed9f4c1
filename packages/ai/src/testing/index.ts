export { describeAnalyzerContract, describeEmbedderContract } from './contract.ts';
export {
  startOpenAITestServer,
  type Endpoint,
  type Fault,
  type LoggedRequest,
  type OpenAITestServer,
  type OpenAITestServerOptions,
} from './server.ts';
