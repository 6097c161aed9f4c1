import { runServiceMain } from '@tributary/core/service';
import { analysisService } from './service.ts';

await runServiceMain(analysisService);
