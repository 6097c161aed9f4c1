export * from './services.ts';
export * from './database.ts';
export { describeTransportContract, type TransportFixture } from './transport-contract.ts';
export { describeLogContract, expectFollowerAcrossLoss, sqlLogFixture, transportLogFixture, type LogFixture, type LogFixtureOptions } from './log-contract.ts';
export { readStartScript, startScriptArgs, stopProcesses, type StartScript } from './processes.ts';
export { startTcpProxy, type TcpProxy } from './proxy.ts';
export { startPostgresServer, type TestPostgres } from './postgres.ts';
export { sharedBrokerUrl, startTestBroker, type TestBroker } from './brokers.ts';
