/**
 * Changes what FastDataSource (the base of Tributary's IdentityDataSource) does, in this process
 * only, so the benchmarks can measure the gateway without one or both of its additions:
 *   fetcher 'default': Apollo's own make-fetch-happen fetcher instead of the undici pools
 *   dedupe false:      every entity representation sent, as RemoteGraphQLDataSource does
 * `{ fetcher: 'default', dedupe: false }` is the gateway as it was before FastDataSource.
 */
import { RemoteGraphQLDataSource, type GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { FastDataSource } from '@tributary/gateway';

export function configureFastDataSource(options: { fetcher: 'undici' | 'default'; dedupe: boolean }): void {
  const fast = FastDataSource.prototype.process;
  const plain = RemoteGraphQLDataSource.prototype.process;
  const switched = new WeakSet<object>();
  FastDataSource.prototype.process = function (this: FastDataSource, processOptions: GraphQLDataSourceProcessOptions) {
    if (options.fetcher === 'default' && !switched.has(this)) {
      switched.add(this);
      this.fetcher = new RemoteGraphQLDataSource().fetcher;
    }
    return (options.dedupe ? fast : plain).call(this, processOptions);
  };
}
