-- Run once by the postgres image when its data volume is empty (docker-entrypoint-initdb.d).
-- One database per service, each named in that service's <SERVICE>_DATABASE_URL in
-- docker-compose.yml. The services would also create their database if it were missing; creating
-- them here lets them run as a role without CREATEDB.
CREATE DATABASE tributary_documents;
CREATE DATABASE tributary_jobs;
CREATE DATABASE tributary_analysis;
CREATE DATABASE tributary_insights;
CREATE DATABASE tributary_webhooks;
