--! Previous: sha1:3f99f8d671a0c9788df41a2f8b28266c813fc866
--! Hash: sha1:cf3639d8fd6f547828abc1576f12e7ea33a02ade
--! Message: Review of 000044-000045 (issue 16): segments_leads and enroll_segment_in_sequence force a custom plan, so find_leads computes the typed filter once while planning, not for every lead (PostgreSQL 15: 2 s for a 4,000-lead segment page); index comments say which queries can use the tenant-led trigram indexes

-- Review of 000044-000045 (issue 16): callers that pass find_leads a filter known only when running
-- get a custom plan (on PostgreSQL 15 a segment page computed the typed filter for every lead: 2 s
-- for 4,000 leads); the index comments say which queries can use them.
--! Included crm/find_leads.sql
create or replace function app_public.find_leads(filter jsonb default '{}') returns setof app_public.leads
  -- SQL, without SET options and not SECURITY DEFINER, so that PostgreSQL inlines it into the query
  -- PostGraphile sends. The filter is then a constant, lead_filter_of is immutable, and the planner
  -- computes the typed filter while planning: every condition of a field that is not set folds away,
  -- the others become plain conditions on indexed columns with true estimates, and the LIMIT of the
  -- page reaches the index on (tenant_id, created_at desc). A page reads about as many rows as it
  -- returns instead of every lead that matches. Every name is schema-qualified (the search path is
  -- that of the caller). Call it with a constant filter (a parameter of a custom plan): with a
  -- filter known only when running (a column, a generic plan), the typed filter would be computed
  -- again for every lead; PL/pgSQL callers set plan_cache_mode to force_custom_plan.
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
--! Included crm/segments_leads.sql
create or replace function app_public.segments_leads(segment app_public.segments) returns setof app_public.leads
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
  -- A custom plan for every call: find_leads computes its typed filter while planning when the filter
  -- is a constant; in a generic plan it would compute it again for every lead.
  set plan_cache_mode to force_custom_plan
as $$
begin
  return query select l.* from app_public.find_leads(segment.filter) l;
end;
$$;

comment on function app_public.segments_leads(app_public.segments) is 'The leads that match the segment''s filter now, newest first (the segment''s leads field; same rules as find_leads).';

grant execute on function app_public.segments_leads(app_public.segments) to :DATABASE_VISITOR;
--! EndIncluded crm/segments_leads.sql
--! Included nurture/enroll_segment_in_sequence.sql
create or replace function app_public.enroll_segment_in_sequence(sequence_id uuid, segment_id uuid default null) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
  set plan_cache_mode to force_custom_plan
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'enroll leads in nurture sequences');
  v_segment app_public.segments;
  v_lead uuid;
  v_count integer := 0;
begin
  select sg.* into v_segment from app_public.segments sg
  where sg.tenant_id = v_tenant_id
    and sg.id = coalesce(enroll_segment_in_sequence.segment_id,
      (select s.enroll_segment_id from app_public.nurture_sequences s where s.tenant_id = v_tenant_id and s.id = enroll_segment_in_sequence.sequence_id));
  if not found then
    raise exception 'No segment to enroll: give segment_id, or set the enroll segment of the sequence' using errcode = 'P0002';
  end if;
  -- The leads of the segment as find_leads gives them (a custom plan: the filter is then computed once,
  -- while planning, not for every lead).
  for v_lead in
    select l.id from app_public.find_leads(v_segment.filter) l order by l.created_at, l.id
  loop
    begin
      if (app_private.enroll_lead(v_tenant_id, enroll_segment_in_sequence.sequence_id, v_lead, 'segment', app_public.current_user_id())).id is not null then
        v_count := v_count + 1;
      end if;
    exception when sqlstate 'SB001' then
      null;  -- on the do-not-contact list: left out
    when sqlstate '22023' then
      if not exists (select 1 from app_public.nurture_sequences s where s.tenant_id = v_tenant_id and s.id = enroll_segment_in_sequence.sequence_id and s.status = 'active') then
        raise;
      end if;
      -- a lead with a final status: left out
    end;
  end loop;
  return v_count;
end;
$$;

comment on function app_public.enroll_segment_in_sequence(uuid, uuid) is 'Enrolls every lead that matches the segment now (default: the enroll segment of the sequence) and returns how many were enrolled; leads already in the sequence, on the do-not-contact list or with a final status are left out. To also enroll leads as they come to match, set enroll_new_segment_matches on the sequence. Errors: P0002 no such segment or sequence; 22023 the sequence is paused or archived; 42501 not a member.';

grant execute on function app_public.enroll_segment_in_sequence(uuid, uuid) to :DATABASE_VISITOR;
--! EndIncluded nurture/enroll_segment_in_sequence.sql
comment on index app_public.leads_tenant_full_name_trgm is 'Search by name (ILIKE and trigram similarity) within a tenant: app_hidden.lead_search_hits, which runs as the owner. Under the row-level security of a request, ILIKE and similarity are not leakproof and cannot use it before the tenant check (the text of find_leads does not).';
comment on index app_public.leads_tenant_email_trgm is 'Search by email (ILIKE) within a tenant: app_hidden.lead_search_hits, which runs as the owner (see leads_tenant_full_name_trgm).';
comment on index app_public.leads_tenant_phone_trgm is 'Search by phone digits (LIKE) within a tenant: app_hidden.lead_search_hits, which runs as the owner (see leads_tenant_full_name_trgm).';
