--! Previous: sha1:51c65bc1a485c369ace6ae1d9e1ecdada03127f1
--! Hash: sha1:a7346039486d8a696b5b78e19666c02ed36f9d9f
--! Message: Lead lists page in the database (issue 16): find_leads is an SQL function that PostgreSQL inlines into the query PostGraphile sends; the typed filter comes from the immutable lead_filter_of, computed while planning, so the LIMIT reaches the index on (tenant_id, created_at desc); statuses still checked by parse_lead_filter, once

-- Lead lists page in the database (issue 16): find_leads becomes an SQL function that PostgreSQL
-- inlines into the query PostGraphile sends, so that its LIMIT reaches the index; the typed filter
-- comes from an immutable function, computed while planning.
--! Included crm/lead_filter_of.sql
create or replace function app_hidden.lead_filter_of(filter jsonb) returns app_hidden.lead_filter
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_allowed constant text[] := array['status', 'status_not', 'tags_any', 'tags_all', 'score_min', 'score_max', 'source',
    'created_within_days', 'created_from', 'created_to', 'city', 'region', 'owner_user_id', 'unassigned', 'text', 'include_deleted'];
  v_key text;
  v_value jsonb;
  v_text text;
  r app_hidden.lead_filter;
begin
  if filter is null or pg_catalog.jsonb_typeof(filter) = 'null' then
    return r;
  end if;
  if pg_catalog.jsonb_typeof(filter) <> 'object' then
    raise exception 'A lead filter must be a JSON object such as {"status": ["new", "contacted"], "tags_any": ["vip"]}; got a JSON %',
      pg_catalog.jsonb_typeof(filter) using errcode = '22023';
  end if;

  for v_key, v_value in select e.key, e.value from pg_catalog.jsonb_each(filter) e order by e.key loop
    if not (v_key = any (v_allowed)) then
      raise exception 'Unknown filter field ''%''. Allowed: %',
        case when pg_catalog.length(v_key) > 60 then pg_catalog.left(v_key, 60) || '…' else v_key end,
        pg_catalog.array_to_string(v_allowed, ', ')
        using errcode = '22023';
    end if;
    continue when pg_catalog.jsonb_typeof(v_value) = 'null';  -- a null value means "not set"
    case v_key
      when 'status' then
        r.status := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'status_not' then
        r.status_not := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, false)) s);
      when 'tags_any' then
        r.tags_any := app_hidden.filter_text_list(v_key, v_value, false);
      when 'tags_all' then
        r.tags_all := app_hidden.filter_text_list(v_key, v_value, false);
      when 'score_min' then
        r.score_min := app_hidden.filter_integer(v_key, v_value, 0, 100);
      when 'score_max' then
        r.score_max := app_hidden.filter_integer(v_key, v_value, 0, 100);
      when 'source' then
        r.source := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'created_within_days' then
        r.created_within_days := app_hidden.filter_integer(v_key, v_value, 1, 36500);
      when 'created_from' then
        r.created_from := app_hidden.filter_date(v_key, v_value);
      when 'created_to' then
        r.created_to := app_hidden.filter_date(v_key, v_value);
      when 'city' then
        r.city := (select pg_catalog.array_agg(pg_catalog.lower(pg_catalog.btrim(s))) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'region' then
        r.region := (select pg_catalog.array_agg(pg_catalog.btrim(s)) from pg_catalog.unnest(app_hidden.filter_text_list(v_key, v_value, true)) s);
      when 'owner_user_id' then
        if pg_catalog.jsonb_typeof(v_value) <> 'string'
           or (v_value #>> '{}') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
          raise exception 'Filter field ''owner_user_id'' must be a user id (a UUID string)' using errcode = '22023';
        end if;
        r.owner_user_id := (v_value #>> '{}')::uuid;
      when 'unassigned' then
        if pg_catalog.jsonb_typeof(v_value) <> 'boolean' then
          raise exception 'Filter field ''unassigned'' must be true or false' using errcode = '22023';
        end if;
        r.unassigned := (v_value #>> '{}')::boolean;
      when 'include_deleted' then
        if pg_catalog.jsonb_typeof(v_value) <> 'boolean' then
          raise exception 'Filter field ''include_deleted'' must be true or false' using errcode = '22023';
        end if;
        r.include_deleted := (v_value #>> '{}')::boolean;
      when 'text' then
        v_text := case when pg_catalog.jsonb_typeof(v_value) = 'string' then pg_catalog.btrim(v_value #>> '{}') end;
        if v_text is null or v_text = '' or pg_catalog.length(v_text) > 200 then
          raise exception 'Filter field ''text'' must be a non-blank string of at most 200 characters' using errcode = '22023';
        end if;
        r.text := v_text;
    end case;
  end loop;

  if r.score_min > r.score_max then
    raise exception 'Filter field ''score_min'' (%) must not be greater than ''score_max'' (%)', r.score_min, r.score_max using errcode = '22023';
  end if;
  if r.created_from > r.created_to then
    raise exception 'Filter field ''created_from'' (%) must not be after ''created_to'' (%)', r.created_from, r.created_to using errcode = '22023';
  end if;
  if r.unassigned and r.owner_user_id is not null then
    raise exception 'Filter fields ''unassigned'': true and ''owner_user_id'' cannot be combined' using errcode = '22023';
  end if;
  return r;
end;
$$;

comment on function app_hidden.lead_filter_of(jsonb) is $$The typed form of a lead filter document (see find_leads for the language), checked for everything that does not depend on data: raises 22023 with a message naming the field for a filter that is not a JSON object, an unknown field, a value of the wrong type, an out-of-range number, an invalid date or UUID, or contradictory bounds. Immutable, so that PostgreSQL computes it once, while planning, when the filter is a constant (find_leads inlined into a query). Statuses are checked against lead_statuses by app_hidden.parse_lead_filter. null (or {}) is the empty filter.$$;

grant execute on function app_hidden.lead_filter_of(jsonb) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_filter_of.sql
--! Included crm/parse_lead_filter.sql
create or replace function app_hidden.parse_lead_filter(filter jsonb) returns app_hidden.lead_filter
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown text;
  r app_hidden.lead_filter := app_hidden.lead_filter_of(filter);
begin
  select s into v_unknown
    from pg_catalog.unnest(pg_catalog.array_cat(r.status, r.status_not)) s
   where not exists (select 1 from app_public.lead_statuses ls where ls.status = s)
   limit 1;
  if v_unknown is not null then
    raise exception 'Unknown status ''%'' in filter field ''%''. Known statuses: %',
      case when pg_catalog.length(v_unknown) > 60 then pg_catalog.left(v_unknown, 60) || '…' else v_unknown end,
      case when v_unknown = any (r.status) then 'status' else 'status_not' end,
      (select pg_catalog.string_agg(ls.status, ', ' order by ls.stage_order nulls last, ls.status) from app_public.lead_statuses ls)
      using errcode = '22023';
  end if;
  return r;
end;
$$;

comment on function app_hidden.parse_lead_filter(jsonb) is $$Validates a lead filter document (see find_leads for the language) and returns it typed: app_hidden.lead_filter_of, then its statuses checked against lead_statuses. Raises 22023 with a message naming the field for: a filter that is not a JSON object, an unknown field ("Unknown filter field 'x'. Allowed: ..."), a value of the wrong type, an out-of-range number, an invalid date or UUID, an unknown status, or contradictory bounds. null (or {}) is the empty filter.$$;

grant execute on function app_hidden.parse_lead_filter(jsonb) to :DATABASE_VISITOR;
--! EndIncluded crm/parse_lead_filter.sql
--! Included crm/find_leads.sql
create or replace function app_public.find_leads(filter jsonb default '{}') returns setof app_public.leads
  -- SQL, without SET options and not SECURITY DEFINER, so that PostgreSQL inlines it into the query
  -- PostGraphile sends. The filter is then a constant, lead_filter_of is immutable, and the planner
  -- computes the typed filter while planning: every condition of a field that is not set folds away,
  -- the others become plain conditions on indexed columns with true estimates, and the LIMIT of the
  -- page reaches the index on (tenant_id, created_at desc). A page reads about as many rows as it
  -- returns instead of every lead that matches. Every name is schema-qualified (the search path is
  -- that of the caller).
  language sql stable
as $$
  select l.*
    from app_public.leads l
   -- Checks the statuses of the filter (a condition without columns: evaluated once, before the scan).
   where pg_catalog.num_nulls(app_hidden.parse_lead_filter(find_leads.filter)) >= 0
     and l.tenant_id = (select app_public.current_tenant_id())
     and (coalesce((app_hidden.lead_filter_of(find_leads.filter)).include_deleted, false) or l.deleted_at is null)
     and ((app_hidden.lead_filter_of(find_leads.filter)).status is null or l.status = any ((app_hidden.lead_filter_of(find_leads.filter)).status))
     and ((app_hidden.lead_filter_of(find_leads.filter)).status_not is null or l.status <> all ((app_hidden.lead_filter_of(find_leads.filter)).status_not))
     and ((app_hidden.lead_filter_of(find_leads.filter)).tags_any is null or l.tags operator(pg_catalog.&&) (app_hidden.lead_filter_of(find_leads.filter)).tags_any)
     and ((app_hidden.lead_filter_of(find_leads.filter)).tags_all is null or l.tags operator(pg_catalog.@>) (app_hidden.lead_filter_of(find_leads.filter)).tags_all)
     and ((app_hidden.lead_filter_of(find_leads.filter)).score_min is null or l.lead_score >= (app_hidden.lead_filter_of(find_leads.filter)).score_min)
     and ((app_hidden.lead_filter_of(find_leads.filter)).score_max is null or l.lead_score <= (app_hidden.lead_filter_of(find_leads.filter)).score_max)
     and ((app_hidden.lead_filter_of(find_leads.filter)).source is null or l.source = any ((app_hidden.lead_filter_of(find_leads.filter)).source))
     and ((app_hidden.lead_filter_of(find_leads.filter)).created_within_days is null
          or l.created_at >= pg_catalog.now() - pg_catalog.make_interval(days => (app_hidden.lead_filter_of(find_leads.filter)).created_within_days))
     and ((app_hidden.lead_filter_of(find_leads.filter)).created_from is null
          or l.created_at >= (select app_hidden.tenant_day_start(app_public.current_tenant_id(), (app_hidden.lead_filter_of(find_leads.filter)).created_from)))
     and ((app_hidden.lead_filter_of(find_leads.filter)).created_to is null
          or l.created_at < (select app_hidden.tenant_day_start(app_public.current_tenant_id(), (app_hidden.lead_filter_of(find_leads.filter)).created_to + 1)))
     and ((app_hidden.lead_filter_of(find_leads.filter)).city is null or pg_catalog.lower(l.city) = any ((app_hidden.lead_filter_of(find_leads.filter)).city))
     and ((app_hidden.lead_filter_of(find_leads.filter)).region is null or l.region = any ((app_hidden.lead_filter_of(find_leads.filter)).region))
     and ((app_hidden.lead_filter_of(find_leads.filter)).owner_user_id is null or l.owner_user_id = (app_hidden.lead_filter_of(find_leads.filter)).owner_user_id)
     and ((app_hidden.lead_filter_of(find_leads.filter)).unassigned is null or (app_hidden.lead_filter_of(find_leads.filter)).unassigned = (l.owner_user_id is null))
     and ((app_hidden.lead_filter_of(find_leads.filter)).text is null
          or l.full_name operator(pg_catalog.~~*) ('%' || app_hidden.like_escape((app_hidden.lead_filter_of(find_leads.filter)).text) || '%')
          or l.email::text operator(pg_catalog.~~*) ('%' || app_hidden.like_escape((app_hidden.lead_filter_of(find_leads.filter)).text) || '%')
          or l.phone::text operator(pg_catalog.~~) ('%' || app_hidden.phone_search_digits((app_hidden.lead_filter_of(find_leads.filter)).text) || '%'))
   order by l.created_at desc, l.id
$$;

comment on function app_public.find_leads(jsonb) is 'The current tenant''s leads matching a filter, newest first. The filter is a JSON object; every field is optional and they combine with AND:
  status: "new" or ["new", "contacted"] (one of these statuses) · status_not: ["lost", "dnc"] (none of these)
  tags_any: ["vip", "roof"] (at least one tag) · tags_all: ["vip", "roof"] (every tag)
  score_min, score_max: whole numbers 0 to 100 (inclusive)
  source: "google_ads" or ["google_ads", "referral"]
  created_within_days: 7 (created in the last 7 days; 1 to 36500) · created_from, created_to: "2025-03-01", "2025-03-31" (inclusive days in the business''s time zone)
  city: "Austin" or ["austin", "Dallas"] (case-insensitive) · region: "TX" or ["TX", "FL"]
  owner_user_id: "<user id>" · unassigned: true (no owner) or false (has an owner)
  text: "smith" (in the name or email, or digits in the phone number; % and _ are plain characters)
  include_deleted: true (also soft-deleted leads; default false)
Example: {"status": ["new", "contacted"], "tags_any": ["vip"], "score_min": 50, "city": "Austin", "created_within_days": 30}.
A JSON null value means the field is not set; {} (or no filter) matches every live lead. Lists take 1 to 100 non-blank values of at most 200 characters.
Errors: 22023 with a message naming the field for a filter that is not a JSON object (e.g. a string holding broken JSON), an unknown field (the message lists the allowed ones), a wrong type, an out-of-range value, an unknown status, or score_min > score_max / created_from > created_to.';

grant execute on function app_public.find_leads(jsonb) to :DATABASE_VISITOR;
--! EndIncluded crm/find_leads.sql
