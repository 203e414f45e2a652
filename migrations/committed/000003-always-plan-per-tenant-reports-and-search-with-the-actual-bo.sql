--! Previous: sha1:5e1e54128aa3be9ebc5553f429ec8ccd7a13edc9
--! Hash: sha1:4f27a46041b4ef2d08c75587f821fc22d0c91921
--! Message: always plan per-tenant reports and search with the actual bounds

-- Per-tenant reports and search run their inner query with a tenant id and date/text bounds as
-- PL/pgSQL variables. PL/pgSQL caches that plan per connection and, after five executions, may
-- switch to a generic plan that ignores the actual bounds: measured on 1,000,000 leads, lead_funnel
-- went from ~150 ms to ~940 ms from the sixth call on a pooled connection. Planning these each time
-- costs well under a millisecond, so they always get a custom plan.
alter function app_public.lead_funnel(date, date) set plan_cache_mode = force_custom_plan;
alter function app_public.lead_source_roi(date, date) set plan_cache_mode = force_custom_plan;
alter function app_public.search_leads(text) set plan_cache_mode = force_custom_plan;
