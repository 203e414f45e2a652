--! Previous: sha1:25d74929d91dc83eed18aa7b143e4f483238aea6
--! Hash: sha1:9a1e6b05e64c80223c79973a4191773438a83273
--! Message: Issue 18: the delivery task records a batch of attempts in one call (app_private.record_webhook_attempts)

-- Issue 18: the delivery task records a batch’s attempts in one call instead of one call per delivery.
--! Included platform/record_webhook_attempts.sql
create or replace function app_private.record_webhook_attempts(attempts jsonb) returns setof text
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_private.record_webhook_attempt((a ->> 'delivery_id')::uuid, (a ->> 'status_code')::integer, a ->> 'error',
           coalesce((a ->> 'duration_ms')::integer, 0), a ->> 'response_body')
  from pg_catalog.jsonb_array_elements(record_webhook_attempts.attempts) with ordinality as x(a, n)
  order by x.n;
$$;

comment on function app_private.record_webhook_attempts(jsonb) is $$For the webhook__deliver task: records the attempts of a batch in one call, each through app_private.record_webhook_attempt (the rules live there), in the order given. attempts: a JSON array of {delivery_id, status_code, error, duration_ms, response_body}. Returns each outcome.$$;
--! EndIncluded platform/record_webhook_attempts.sql
