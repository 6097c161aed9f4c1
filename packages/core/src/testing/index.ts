export * from './services.ts';
export { describeTransportContract, type TransportFixture } from './transport-contract.ts';
