/**
 * graphql-js, loaded the way our dependencies load it. The package ships a CommonJS build
 * (`main`) and an ESM one (`module`): Node and @apollo/* / @graphql-inspector get the CommonJS
 * one, but Vite (vitest) resolves `import 'graphql'` in our sources to the ESM one, and graphql-js
 * rejects a schema from "another module or realm". Requiring it keeps one instance everywhere.
 * Import types from 'graphql' as usual; take runtime values from here.
 */
import { createRequire } from 'node:module';

export const graphql: typeof import('graphql') = createRequire(import.meta.url)('graphql');
