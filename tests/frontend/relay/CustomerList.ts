// The customer list as a Relay app writes it: a paginated @connection on Query.customers.
import { graphql } from "relay-runtime";

export const query = graphql`
  query CustomerListQuery($first: Int!, $after: String) {
    ...CustomerList_query @arguments(first: $first, after: $after)
  }
`;

export const fragment = graphql`
  fragment CustomerList_query on Query
  @refetchable(queryName: "CustomerListPaginationQuery")
  @argumentDefinitions(first: { type: "Int", defaultValue: 20 }, after: { type: "String" }) {
    customers(first: $first, after: $after, orderBy: { field: UPDATED_AT, direction: DESC })
      @connection(key: "CustomerList_customers") {
      totalCount
      edges {
        node {
          id
          displayName
          email
          updatedAt
          version
        }
      }
    }
  }
`;
