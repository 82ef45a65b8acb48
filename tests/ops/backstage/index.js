// A Backstage backend holding only the catalog, for policyc's live-catalog tests: started by
// tests/ops/backstage.py with `--config` naming the app-config it writes (127.0.0.1, an in-memory
// SQLite database, a static service token, catalog locations in files the tests edit).
const { createBackend } = require('@backstage/backend-defaults');

const backend = createBackend();
backend.add(require('@backstage/plugin-catalog-backend'));
backend.start();
