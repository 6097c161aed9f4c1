import { runServiceMain } from '@tributary/core/service';
import { jobsService } from './service.ts';

await runServiceMain(jobsService);
